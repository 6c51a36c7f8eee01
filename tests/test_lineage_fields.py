"""Recorded means applied (issue 18): every TransferConfig field is classified, from the model
class itself, and the classification is checked on the tiny models.

- ``PIXELS``: in the generation digest, and changing it changes the generated image;
- ``DIGEST_ONLY``: in the digest, but not able to change an image on this CPU machine (reason);
- ``LEVERS``: speed levers left out of the digest (``TRANSFER_SPEED_LEVERS``): changing one leaves
  the digest alone and the pixels equal up to float rounding (checked where it runs on a CPU).

A new field fails :func:`test_every_field_is_classified` until it is put in one of the three.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from zodi_core.config import TRANSFER_SPEED_LEVERS, ModelsConfig, TransferConfig
from zodi_core.transfer.lineage import generation_digest
from zodi_core.transfer.models import load_components, write_tiny_models
from zodi_core.transfer.sampler import TransferSampler, plan_timesteps

H, W = 64, 96  # 96 wide: size_multiple 64 generates 128 wide, 32 generates 96

#: field → another value; changing it must change the digest and the image.
PIXELS: dict[str, object] = {
    "domain": "snow",
    "prompt": "driving in a desert, best quality",
    "prompts": ("driving at dusk", "driving in heavy fog"),
    "prompt_suffix": ", worst quality",
    "negative_prompt": "blurry",
    "strength": 0.5,
    "seed_offset": 7,
    "domain_settings": {"night": {"strength": 0.5}},
    "num_inference_steps": 8,
    "eta": 0.0,
    "guidance_scale": 7.5,
    "controlnet_conditioning_scale": 0.5,
    "timestep_spacing": "trailing",
    "timestep_mode": "release",
    "palette": "cityscapes",
    "method": "sdedit",
    "seed": 7,
    "seed_policy": "global",
    "short_side": 128,
    "size_multiple": 32,
    "resize_to_source": True,
    "models": "seed-1 tiny models",  # replaced by the folder in the test
}
#: field → (another value, why it cannot change an image here).
DIGEST_ONLY: dict[str, tuple[object, str]] = {
    "device": (
        "auto",
        "where the model runs: 'auto' is this machine's CPU; CUDA kernels round differently, so "
        "a device's images are kept apart",
    ),
    "dtype": (
        "float16",
        "float16 changes the pixels, but half precision needs CUDA (refused on CPU)",
    ),
}
#: field → (another value, why it is not in the digest, whether it can run on this CPU).
LEVERS: dict[str, tuple[object, str, bool]] = {
    "batch_size": (1, "outputs are batch-invariant (per-image generators)", True),
    "compile": (True, "torch.compile fuses kernels: float rounding only; GPU only", False),
    "channels_last": (True, "memory layout of convolutions: float rounding only", True),
    "sdpa_backend": ("math", "attention kernel choice: float rounding only", True),
    "cudnn_benchmark": (False, "cuDNN algorithm choice (CUDA): float rounding only", True),
    "tf32": (False, "TF32 matmuls on CUDA float32 only; no effect in float16 or on CPU", True),
}


def _scene(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    label = np.zeros((H, W), dtype=np.uint8)
    label[: H // 2] = 10  # sky over road, a car
    label[H // 2 - 8 : H // 2 + 8, W // 3 : W // 2] = 13
    return image, label


SCENES = [_scene(0), _scene(1)]


def _base(models_dir: Path) -> TransferConfig:
    return TransferConfig.preset(
        "demo",
        num_inference_steps=4,
        strength=0.75,
        batch_size=2,
        models={"base": str(models_dir), "controlnet": None},
    )


def _generate(components, config: TransferConfig, n: int = 1) -> list[np.ndarray]:
    # A private copy: the sampler casts and re-lays out the modules it is given.
    sampler = TransferSampler(copy.deepcopy(components), config)
    images, labels = zip(*SCENES[:n], strict=True)
    return [o.image for o in sampler(list(images), list(labels), [f"f{i}" for i in range(n)])]


@pytest.fixture(scope="module")
def other_models(tmp_path_factory) -> Path:
    return write_tiny_models(tmp_path_factory.mktemp("tiny-seed1"), seed=1)


@pytest.fixture(scope="module")
def baseline(tiny_models_dir, tiny_components) -> tuple[TransferConfig, str, list[np.ndarray]]:
    """The base config, its digest, and its images of one scene alone and of two together."""
    config = _base(tiny_models_dir)
    images = _generate(tiny_components, config, 1) + _generate(tiny_components, config, 2)
    return config, generation_digest(config), images


def test_every_field_is_classified():
    fields = set(TransferConfig.model_fields)
    classified = set(PIXELS) | set(DIGEST_ONLY) | set(LEVERS)
    assert fields - classified == set(), "classify the new field(s) in this test"
    assert classified - fields == set(), "a classified field no longer exists"
    assert set(LEVERS) == set(TRANSFER_SPEED_LEVERS)
    assert not set(PIXELS) & set(DIGEST_ONLY)


@pytest.mark.parametrize("field", sorted(PIXELS))
def test_a_digested_field_changes_the_image(
    field, baseline, tiny_components, other_models, tiny_models_dir
):
    config, digest, (image, *_) = baseline  # the same call as below: one image, batch of one
    components = tiny_components
    if field == "models":
        changed = config.replace(models=ModelsConfig(base=str(other_models), controlnet=None))
        components = load_components(changed.models, "cpu")
    else:
        changed = config.replace(**{field: PIXELS[field]})
    assert generation_digest(changed) != digest, f"{field} is not in the generation digest"
    (new,) = _generate(components, changed)
    assert new.shape != image.shape or not np.array_equal(new, image), (
        f"{field}: recorded in the digest but the image did not change"
    )


@pytest.mark.parametrize("field", sorted(DIGEST_ONLY))
def test_a_digested_field_that_cannot_change_pixels_here_is_still_digested(field, baseline):
    config, digest, _ = baseline
    value, _reason = DIGEST_ONLY[field]
    assert generation_digest(config.replace(**{field: value})) != digest


@pytest.mark.parametrize("field", sorted(LEVERS))
def test_a_speed_lever_keeps_the_digest_and_the_pixels(field, baseline, tiny_components):
    config, digest, (_, *images) = baseline
    value, _reason, runs_here = LEVERS[field]
    changed = config.replace(**{field: value})
    assert generation_digest(changed) == digest
    if not runs_here:
        return  # torch.compile on CPU takes minutes; tests/test_sampler covers it on GPU
    for new, old in zip(_generate(tiny_components, changed, 2), images, strict=True):
        diff = np.abs(new.astype(int) - old.astype(int))
        assert diff.max() <= 2, f"{field}: pixels moved by {diff.max()} levels"


def test_trailing_and_leading_spacing_differ_in_timesteps_and_images(baseline, tiny_components):
    config, _, (leading_image, *_) = baseline
    trailing = config.replace(timestep_spacing="trailing")
    scheduler = copy.deepcopy(tiny_components.scheduler)
    lead = plan_timesteps(scheduler, config).timesteps.tolist()
    trail = plan_timesteps(scheduler, trailing).timesteps.tolist()
    # k = ⌊4 · 0.75⌋ = 3 of the 4-step grids: leading 751, 501, 251, 1 (SD 1.5, steps_offset 1);
    # trailing 999, 749, 499, 249 (round(arange(1000, 0, -250)) - 1)
    assert lead == [501, 251, 1]
    assert trail == [749, 499, 249]
    (image,) = _generate(tiny_components, trailing)
    assert not np.array_equal(image, leading_image)
