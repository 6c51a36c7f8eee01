"""The tiny test models' ControlNet is live: the condition map and each method's ControlNet
switch change the generated image (an inert, zero-initialised ControlNet hid both)."""

from __future__ import annotations

import numpy as np
import torch

from zodi_core.config import TransferConfig
from zodi_core.transfer.sampler import TransferSampler

H, W = 64, 128
METHODS = ("zodi", "sdedit", "inst", "wo_si")


def _config(**overrides) -> TransferConfig:
    base = {"num_inference_steps": 4, "strength": 0.75}
    return TransferConfig.preset("demo", **{**base, **overrides})


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    label = np.zeros((H, W), dtype=np.uint8)  # road below, sky above, a car in the middle
    label[: H // 2] = 10
    label[H // 2 - 8 : H // 2 + 8, W // 3 : W // 2] = 13
    return image, label


def _run(components, method: str, label: np.ndarray, image: np.ndarray) -> np.ndarray:
    sampler = TransferSampler(components, _config(method=method))
    return sampler([image], [label], ["frame_0"])[0].image


def _differ(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixel values that differ (an inert ControlNet gives exactly 0)."""
    return float(np.mean(a != b))


def test_tiny_controlnet_residuals_are_nonzero_and_depend_on_the_condition(tiny_components):
    cn = tiny_components.controlnet
    z = torch.randn(1, 4, H // 8, W // 8, generator=torch.Generator().manual_seed(0))
    emb = torch.randn(
        1, 77, cn.config.cross_attention_dim, generator=torch.Generator().manual_seed(1)
    )
    conds = [torch.zeros(1, 3, H, W), torch.ones(1, 3, H, W)]
    with torch.inference_mode():
        outs = [
            cn(z, 500, encoder_hidden_states=emb, controlnet_cond=c, return_dict=False)
            for c in conds
        ]
    (down0, mid0), (down1, mid1) = outs
    assert all(r.abs().max() > 0 for r in (*down0, mid0)), "a ControlNet residual is all zeros"
    assert (mid0 - mid1).abs().max() > 1e-4, "the ControlNet ignores its condition image"
    assert max((a - b).abs().max() for a, b in zip(down0, down1, strict=True)) > 1e-4


def test_the_four_methods_give_four_different_images(tiny_components):
    image, label = _scene()
    outs = {m: _run(tiny_components, m, label, image) for m in METHODS}
    for i, a in enumerate(METHODS):
        for b in METHODS[i + 1 :]:
            assert _differ(outs[a], outs[b]) > 0.2, f"{a} and {b} give the same image"


def test_controlnet_methods_follow_the_condition_map_and_the_others_ignore_it(tiny_components):
    image, label = _scene()
    other = label.copy()
    other[:, : W // 2] = 0  # a different layout: road on the left half
    for method in ("zodi", "wo_si"):
        a, b = (_run(tiny_components, method, lab, image) for lab in (label, other))
        assert _differ(a, b) > 0.1, f"{method}: the condition map does not change the output"
    for method in ("sdedit", "inst"):
        a, b = (_run(tiny_components, method, lab, image) for lab in (label, other))
        np.testing.assert_array_equal(a, b, err_msg=f"{method} must not use the condition")


def test_differ_measure_sees_small_changes():
    a = np.zeros((4, 4, 3), dtype=np.uint8)
    b = a.copy()
    b[0] = 1
    assert _differ(a, a) == 0.0 and _differ(a, b) == 0.25
