"""The scheduler SD 1.5 needs, whatever a folder's scheduler_config.json says (issue 18).

DDIM's own defaults clip x0 to [-1, 1] and end on alpha 1; SD 1.5 samples with neither. A folder
whose scheduler config differs in a sampling setting gets SD 1.5's, with one warning line; one
with another noise schedule (another model family) is refused in one line.
"""

from __future__ import annotations

import json
import shutil
import warnings

import pytest

from zodi_core.config import ModelsConfig
from zodi_core.transfer.models import SD15_SCHEDULER, configure_scheduler, load_components

#: The scheduler_config.json of the hub's SD 1.5 (a PNDM config, no timestep_spacing).
SD15_HUB = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}


def test_the_hub_config_of_sd15_gives_its_ddim_scheduler_without_a_word():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scheduler = configure_scheduler(SD15_HUB)
    assert type(scheduler).__name__ == "DDIMScheduler"
    assert {k: scheduler.config[k] for k in SD15_SCHEDULER} == SD15_SCHEDULER


def test_other_sampling_settings_are_set_to_sd15s_with_one_warning_line():
    odd = {**SD15_HUB, "clip_sample": True, "set_alpha_to_one": True, "steps_offset": 0}
    with pytest.warns(UserWarning) as record:
        scheduler = configure_scheduler(odd, "models.base scheduler")
    (warning,) = record
    message = str(warning.message)
    assert "\n" not in message and message.startswith("models.base scheduler: ")
    assert "clip_sample True → False" in message and "set_alpha_to_one True → False" in message
    assert "steps_offset 0 → 1" in message
    assert (scheduler.config.clip_sample, scheduler.config.set_alpha_to_one) == (False, False)
    assert scheduler.config.steps_offset == 1


def test_another_noise_schedule_is_refused_in_one_line():
    with pytest.raises(ValueError) as exc:
        configure_scheduler(
            {**SD15_HUB, "beta_schedule": "linear", "prediction_type": "v_prediction"}
        )
    message = str(exc.value)
    assert "\n" not in message
    assert "beta_schedule 'linear' (SD 1.5: 'scaled_linear')" in message
    assert "prediction_type 'v_prediction' (SD 1.5: 'epsilon')" in message


def test_a_folder_that_would_clip_x0_loads_with_sd15_settings(tiny_models_dir, tmp_path):
    folder = tmp_path / "models"
    shutil.copytree(tiny_models_dir, folder)
    path = folder / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "clip_sample": True}))
    with pytest.warns(UserWarning, match="clip_sample True → False"):
        parts = load_components(ModelsConfig(base=str(folder), controlnet=None))
    assert parts.scheduler.config.clip_sample is False
