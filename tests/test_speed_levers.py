"""The transfer's speed levers (TransferConfig: channels_last, sdpa_backend, cudnn_benchmark, tf32,
compile, batch_size) on the tiny models: each switches what it names, none changes the pixels
beyond float rounding or enters the generation digest, and compiled models see static shapes
(no recompile across strengths, steps or tail chunks; padded tails equal unpadded ones)."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from zodi_core.config import TRANSFER_SPEED_LEVERS, TransferConfig
from zodi_core.device import speed_levers
from zodi_core.transfer.lineage import transfer_digest
from zodi_core.transfer.sampler import TransferSampler


def _config(**overrides) -> TransferConfig:
    return TransferConfig.preset(
        "demo", **{"num_inference_steps": 2, "strength": 1.0, "batch_size": 2, **overrides}
    )


def _inputs(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (64, 128, 3), dtype=np.uint8) for _ in range(n)]
    labels = [rng.choice([*range(19), 255], size=(64, 128)).astype(np.uint8) for _ in range(n)]
    return images, labels, [f"lever_{seed}_{i}" for i in range(n)]


def _assert_same_images(a, b) -> None:
    """uint8 outputs of float computations that differ by rounding may be one level apart."""
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert_close(
            torch.from_numpy(x.image).float(), torch.from_numpy(y.image).float(), atol=1, rtol=0
        )


class BatchRecorder(torch.nn.Module):
    """Wraps a model and records the batch size of every call."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.batches: list[int] = []

    @property
    def dtype(self) -> torch.dtype:
        return self.inner.dtype

    def forward(self, sample, t, *args, **kwargs):
        self.batches.append(sample.shape[0])
        return self.inner(sample, t, *args, **kwargs)


# 1. The levers switch what they name, and restore it ------------------------------------------


def _tf32_flags() -> tuple:
    """torch's TF32 flags, old and new API: reading both fails if they were set inconsistently."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    return (
        matmul.allow_tf32,
        cudnn.allow_tf32,
        matmul.fp32_precision,
        cudnn.conv.fp32_precision,
        torch.get_float32_matmul_precision(),
    )


def test_speed_levers_set_attention_tf32_and_benchmark_then_restore():
    before = (*_tf32_flags(), torch.backends.cudnn.benchmark)
    with speed_levers(torch.device("cpu"), sdpa_backend="math", tf32=True):
        assert torch.backends.cuda.math_sdp_enabled()
        assert not torch.backends.cuda.flash_sdp_enabled()
        assert _tf32_flags() == (True, True, "tf32", "tf32", "high")
    with speed_levers(torch.device("cpu"), tf32=False):
        assert _tf32_flags()[:2] == (False, False)
        assert _tf32_flags()[4] == "highest"
        assert torch.backends.cuda.flash_sdp_enabled()  # 'auto' leaves torch's choice
    after = (*_tf32_flags(), torch.backends.cudnn.benchmark)
    # the same settings ('none', the new API's "unset", reads back as its value 'ieee')
    assert [after[i] for i in (0, 1, 4, 5)] == [before[i] for i in (0, 1, 4, 5)]
    with pytest.raises(ValueError, match="sdpa_backend: expected 'auto' or one of .*'xformers'"):
        with speed_levers(torch.device("cpu"), sdpa_backend="xformers"):
            pass


def test_levers_are_not_in_the_digest_and_dtype_is():
    cfg = _config()
    switched = cfg.replace(
        batch_size=1,
        compile=True,
        channels_last=True,
        sdpa_backend="math",
        cudnn_benchmark=False,
        tf32=False,
    )
    assert set(TRANSFER_SPEED_LEVERS) <= set(TransferConfig.model_fields)
    assert transfer_digest(switched) == transfer_digest(cfg)
    assert transfer_digest(cfg.replace(dtype="bfloat16")) != transfer_digest(cfg)


def test_transfer_config_refuses_an_unknown_attention_backend():
    with pytest.raises(ValueError, match="sdpa_backend"):
        _config(sdpa_backend="xformers")


def test_channels_last_and_math_attention_give_the_same_images(tiny_components):
    images, labels, ids = _inputs(2)
    plain = TransferSampler(tiny_components, _config())(images, labels, ids)
    # channels_last converts the shared modules in place: give this sampler its own copies
    parts = dataclasses.replace(
        tiny_components,
        unet=_copy(tiny_components.unet),
        controlnet=_copy(tiny_components.controlnet),
        vae=_copy(tiny_components.vae),
    )
    cfg = _config(channels_last=True, sdpa_backend="math", tf32=False)
    sampler = TransferSampler(parts, cfg)
    assert sampler.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    _assert_same_images(sampler(images, labels, ids), plain)
    # the default leaves the layout alone (no NHWC without a figure that it helps)
    assert tiny_components.unet.conv_in.weight.is_contiguous()


def test_an_attention_backend_without_a_kernel_is_one_line_naming_the_setting(tiny_components):
    images, labels, ids = _inputs(1)
    sampler = TransferSampler(tiny_components, _config(sdpa_backend="cudnn"))
    with pytest.raises(ValueError, match="sdpa_backend: 'cudnn' has no attention kernel .*'auto'"):
        sampler(images, labels, ids)


def test_the_attention_backend_is_the_unets_and_controlnets_not_the_vaes(tiny_components):
    """sdpa_backend forces the kernel of the denoising loop only: SD's VAE attends with one head
    of 512 channels, which flash and cuDNN do not take (on an H200 'flash' and 'cudnn' failed
    for the whole transfer while the VAE was inside the lever)."""
    seen: dict[str, set] = {"unet": set(), "controlnet": set(), "vae": set()}

    def spy(name, fn):
        def wrapped(*args, **kwargs):
            seen[name].add(torch.backends.cuda.flash_sdp_enabled())
            return fn(*args, **kwargs)

        return wrapped

    parts = dataclasses.replace(
        tiny_components,
        unet=_copy(tiny_components.unet),
        controlnet=_copy(tiny_components.controlnet),
        vae=_copy(tiny_components.vae),
    )
    parts.unet.forward = spy("unet", parts.unet.forward)
    parts.controlnet.forward = spy("controlnet", parts.controlnet.forward)
    parts.vae.encode = spy("vae", parts.vae.encode)
    parts.vae.decode = spy("vae", parts.vae.decode)
    images, labels, ids = _inputs(1)
    TransferSampler(parts, _config(sdpa_backend="math"))(images, labels, ids)
    assert seen == {"unet": {False}, "controlnet": {False}, "vae": {True}}
    assert torch.backends.cuda.flash_sdp_enabled()  # torch's choice again after the call


def _copy(module: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(module)


# 2. Static shapes: padded tails, no recompiles ------------------------------------------------


def test_static_batch_pads_the_tail_chunk_and_keeps_its_images(tiny_components):
    images, labels, ids = _inputs(3)
    unet = BatchRecorder(tiny_components.unet)
    parts = dataclasses.replace(tiny_components, unet=unet)
    sampler = TransferSampler(parts, _config(batch_size=2))
    unpadded = sampler(images, labels, ids)
    assert unet.batches == [2, 4, 4, 1, 2, 2]  # inversion N, then 2N per CFG step; tail of 1
    sampler.static_batch = True  # what compile=True sets, without compiling (fast)
    unet.batches.clear()
    padded = sampler(images, labels, ids)
    assert unet.batches == [2, 4, 4] * 2  # the tail chunk padded to the batch size
    _assert_same_images(padded, unpadded)
    assert [o.metadata["seed"] for o in padded] == [o.metadata["seed"] for o in unpadded]


def test_out_of_memory_halving_with_static_shapes_says_it_compiles_a_new_shape(
    tiny_components, monkeypatch, caplog
):
    sampler = TransferSampler(tiny_components, _config(batch_size=2))
    sampler.static_batch = True
    real = sampler._run_chunk
    pads = []

    def flaky(images, *args):
        pads.append(args[-1])
        if args[-1] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return real(images, *args)

    monkeypatch.setattr(sampler, "_run_chunk", flaky)
    images, labels, ids = _inputs(2)
    with caplog.at_level(logging.WARNING, logger="zodi_core.transfer.sampler"):
        out = sampler(images, labels, ids)
    assert len(out) == 2 and pads == [2, 1, 1]
    assert "batch halved to 1; the compiled models compile this new shape once" in caplog.text


@pytest.mark.slow
def test_compiled_sampler_never_recompiles_across_strengths_steps_and_tail_chunks(
    tiny_components,
):
    """torch.compile with dynamic=False: the first batch compiles the two shapes (N for the
    inversion, 2N for the CFG steps); other strengths, step counts and a tail chunk then run
    with error_on_recompile set, and give the uncompiled sampler's images."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()
    cfg = _config(compile=True, batch_size=2)
    compiled = TransferSampler(tiny_components, cfg, compile_backend=counter)
    eager = TransferSampler(tiny_components, cfg.replace(compile=False))
    images, labels, ids = _inputs(3)
    first = compiled(images[:2], labels[:2], ids[:2])
    warm = counter.frame_count
    assert warm > 0
    _assert_same_images(first, eager(images[:2], labels[:2], ids[:2]))
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            for strength, steps in ((0.5, 4), (0.75, 4), (1.0, 3)):
                other = cfg.replace(strength=strength, num_inference_steps=steps)
                out = compiled(images, labels, ids, other)  # 3 images: a tail chunk of 1
                _assert_same_images(out, eager(images, labels, ids, other))
    finally:
        torch._dynamo.reset()
    assert counter.frame_count == warm


@pytest.mark.gpu
def test_levers_on_cuda_compile_with_inductor_without_recompiles_and_match(tiny_models_dir):
    """On the GPU: inductor-compiled float16 models with channels_last and each attention
    backend that has a kernel give the eager images (within half-precision rounding)."""
    from zodi_core.config import ModelsConfig
    from zodi_core.transfer.models import load_components

    def load():
        return load_components(
            ModelsConfig(base=str(tiny_models_dir), controlnet=None), "cuda", torch.float16
        )

    images, labels, ids = _inputs(3)
    cfg = _config(device="cuda", batch_size=2)
    eager = TransferSampler(load(), cfg)(images, labels, ids)
    torch._dynamo.reset()
    compiled = TransferSampler(load(), cfg.replace(compile=True, channels_last=True))
    compiled(images[:2], labels[:2], ids[:2])
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            out = compiled(images, labels, ids, cfg.replace(strength=0.5, num_inference_steps=4))
            out = compiled(images, labels, ids)
    finally:
        torch._dynamo.reset()
    for a, b in zip(out, eager, strict=True):
        assert np.abs(a.image.astype(int) - b.image.astype(int)).mean() < 2.0
    for backend in ("math", "flash", "efficient", "cudnn"):
        sampler = TransferSampler(load(), cfg.replace(sdpa_backend=backend))
        try:
            got = sampler(images, labels, ids)
        except ValueError as err:  # a backend without a kernel here says so in one line
            assert "has no attention kernel" in str(err)
            continue
        for a, b in zip(got, eager, strict=True):
            assert np.abs(a.image.astype(int) - b.image.astype(int)).mean() < 2.0, backend


# 3. The command line -------------------------------------------------------------------------


def test_zodi_transfer_lever_flags_reach_the_config():
    from zodi_cli import build_parser
    from zodi_cli.transfer import build_config

    base = ["transfer", "--manifest", "m.parquet", "--domain", "night", "--out", "out"]
    levers = ["--compile", "--channels-last", "--sdpa-backend", "math", "--no-cudnn-benchmark"]
    cfg = build_config(build_parser().parse_args([*base, *levers, "--no-tf32"]))
    assert (cfg.compile, cfg.channels_last, cfg.sdpa_backend) == (True, True, "math")
    assert (cfg.cudnn_benchmark, cfg.tf32) == (False, False)
    default = build_config(build_parser().parse_args(base))
    assert (default.compile, default.channels_last, default.sdpa_backend) == (False, False, "auto")
    assert (default.cudnn_benchmark, default.tf32) == (True, True)
