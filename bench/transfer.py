"""Benchmark: the batched transfer sampler, one speed lever at a time, against the release's loop.

Run (each prints one line per measurement and, with ``--out``, writes the results as JSON):

- ``python bench/transfer.py``: CPU, a mid-size random-weight model (SD 1.5's block layout at
  reduced width) at 256x128, our sampler at batch 4 vs the faithful loop.
- ``python bench/transfer.py --gpu``: Stable Diffusion 1.5 + ControlNet's full architecture with
  random weights, from configs (no download), at 1024x512 on CUDA.
- ``python bench/transfer.py --flops-only --arch sd15 --size 1024x512``: the work of one image,
  counted on meta tensors (no weights, no compute) in seconds on any machine.
- ``python bench/transfer.py --matrix --gpu --out r.json --markdown r.md``: the GPU check's
  matrix (dtype, channels_last, compile, batch size, attention backend) within a time budget
  (``scripts/gpu_check.sh`` runs it).
- ``--profile FILE``: after the runs, one batch of the base config (levers as given) under
  ``torch.profiler``: the device time in VAE encode, ControlNet, UNet and VAE decode, and the top
  kernels, as markdown.

Lever flags (``TransferConfig`` fields of the same name; unset: the config's default):
``--dtype``, ``--channels-last/--no-channels-last``, ``--compile``, ``--sdpa-backend``,
``--cudnn-benchmark/--no-cudnn-benchmark``, ``--tf32/--no-tf32``, ``--batch-size``.

Both sides run on the same device, model and inputs and compute the same ZoDi transfer (SPEC §2):
- **ours**: :class:`TransferSampler` with the levers asked for: batches, both CFG branches in one
  UNet + ControlNet call.
- **faithful**: the release's loop: one image at a time, CFG as two separate ControlNet + UNet
  calls, strict float32 (no TF32), no compile, default layout and attention.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` under the math attention
backend (the fused CPU and GPU attention kernels are not all counted by it), on meta tensors
at batch 1: one VAE encode, 1 + 2k ControlNet + UNet evaluations (inversion, then k CFG steps of
two branches) and one VAE decode per image; the text encoder (once per prompt) is left out.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zodi_core.config import ModelsConfig, TransferConfig
from zodi_core.device import speed_levers
from zodi_core.transfer.models import (
    SD15_SCHEDULER,
    Components,
    build_tiny_components,
    load_components,
    tiny_tokenizer,
)
from zodi_core.transfer.sampler import TransferSampler, plan_timesteps, sample_seed

#: Dense (no sparsity) fp16/bf16 tensor-core peak in TFLOP/s by card name, for "% of peak".
DENSE_HALF_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0}

#: The lever fields a run may set (TransferConfig names).
LEVERS = ("dtype", "channels_last", "compile", "sdpa_backend", "cudnn_benchmark", "tf32")

#: Seconds a compiled run is assumed to need before its first image (budgeting the matrix).
COMPILE_ESTIMATE_S = 150.0


# 1. Models and inputs ---------------------------------------------------------------------------


def build_components(arch: str, device: str | torch.device = "cpu", seed: int = 0) -> Components:
    """Random-weight components, created directly on ``device`` (``meta``: shapes only).

    ``sd15``: SD 1.5's exact architecture (UNet 320/640/1280/1280, ControlNet from it, VAE
    128/256/512/512, CLIP ViT-L/14 text encoder). ``narrow``: SD 1.5's block layout at reduced
    width (64/128/256/256), large enough that UNet/ControlNet compute, not Python overhead,
    dominates on CPU. ``tiny``: the test suite's tiny models (seconds on CPU).
    """
    from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel

    if arch == "tiny":
        with torch.device(device):
            tiny = build_tiny_components(seed)
        # the scheduler's tables stay on the CPU (a meta table cannot be read)
        return dataclasses.replace(tiny, scheduler=DDIMScheduler(**SD15_SCHEDULER))
    from transformers import CLIPTextConfig, CLIPTextModel

    if arch == "sd15":
        width, text_dim, text_layers, heads = (320, 640, 1280, 1280), 768, 12, 12
        vae_width = (128, 256, 512, 512)
    elif arch == "narrow":
        width, text_dim, text_layers, heads = (64, 128, 256, 256), 256, 2, 4
        vae_width = (32, 64, 128, 128)
    else:
        raise ValueError(f"arch: expected 'sd15', 'narrow' or 'tiny', received {arch!r}")
    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel(
            sample_size=64,
            block_out_channels=width,
            layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=text_dim,
            attention_head_dim=8,
        )
        controlnet = ControlNetModel.from_unet(unet)
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=vae_width,
            layers_per_block=2,
            latent_channels=4,
            sample_size=512,
            scaling_factor=0.18215,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=49408,
                hidden_size=text_dim,
                intermediate_size=4 * text_dim,
                num_attention_heads=heads,
                num_hidden_layers=text_layers,
                max_position_embeddings=77,
            )
        )
    for m in (unet, controlnet, vae, text_encoder):
        m.eval().requires_grad_(False)
    name = {"sd15": "random-sd15-architecture", "narrow": "random-sd15-layout-narrow"}[arch]
    return Components(
        unet,
        controlnet,
        vae,
        text_encoder,
        tiny_tokenizer(),  # token ids only matter, not the vocabulary
        DDIMScheduler(**SD15_SCHEDULER),
        {"base": name},
    )


def make_inputs(n: int, width: int, height: int, seed: int = 0):
    """n random images (H, W, 3) uint8 with blocky train-id maps of 16x16 cells, and their ids."""
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(n)]
    cells = [
        rng.choice([*range(19), 255], size=(max(1, height // 16), max(1, width // 16)))
        for _ in range(n)
    ]
    labels = [np.kron(c, np.ones((16, 16)))[:height, :width].astype(np.uint8) for c in cells]
    labels = [np.pad(lab, ((0, height - lab.shape[0]), (0, width - lab.shape[1])), "edge")
              for lab in labels]  # fmt: skip
    return images, labels, [f"bench_{i:04d}" for i in range(n)]


# 2. The faithful loop and the FLOP count -------------------------------------------------------


def faithful_transfer(
    sampler: TransferSampler,
    image: np.ndarray,
    label: np.ndarray,
    sample_id: str,
    config: TransferConfig,
) -> np.ndarray:
    """The release's loop for one image: batch 1, CFG as two separate ControlNet+UNet calls.

    Same equations, noise and generator use as the batched sampler, so outputs agree (fp32).
    """
    from zodi_core.conditions import render_condition

    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
    control = torch.from_numpy(render_condition(label, config.palette)).permute(2, 0, 1)[None]
    control = control.float().div(255).to(sampler.device)
    g = torch.Generator().manual_seed(sample_seed(config.seed, sample_id, config.seed_policy))
    negative, positive = sampler.encode_prompt(config.effective_prompt, config.negative_prompt)
    plan = plan_timesteps(sampler.scheduler, config)
    scale = config.controlnet_conditioning_scale
    levers = speed_levers(sampler.device, cudnn_benchmark=False, tf32=False)
    with levers, torch.inference_mode():
        z0 = sampler.encode(x)
        eps = torch.randn(z0.shape[1:], generator=g)[None].to(sampler.device)
        latents = sampler.start_latents(z0, eps, plan, positive, control, config)
        for t in plan.timesteps:
            uncond = sampler.predict_noise(latents, t, negative, control, scale)
            cond = sampler.predict_noise(latents, t, positive, control, scale)
            guided = uncond + config.guidance_scale * (cond - uncond)
            variance = torch.randn(latents.shape[1:], generator=g)[None].to(sampler.device)
            latents = sampler.scheduler.step(
                guided, t, latents, eta=config.eta, variance_noise=variance, return_dict=False
            )[0]
        out = sampler.decode(latents)
    return ((out[0] + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()


def count_flops(arch: str, config: TransferConfig, width: int, height: int) -> dict[str, Any]:
    """FLOPs of one ``width``x``height`` image through the sampler's model work, counted on meta
    tensors (shapes only: seconds even for SD 1.5) at batch 1 under the math attention backend.

    Returns:
        per_image, per_evaluation (one ControlNet + UNet call of one branch), vae (encode +
        decode) and evaluations, in FLOPs; ``counted`` says how.
    """
    from torch.utils.flop_counter import FlopCounterMode

    config = config.replace(batch_size=1, compile=False, channels_last=False)
    sampler = TransferSampler(
        build_components(arch, "meta"), config, device="meta", dtype=torch.float32
    )
    plan = plan_timesteps(sampler.scheduler, config)
    latent = (1, 4, height // sampler.vae_scale, width // sampler.vae_scale)
    x = torch.zeros(1, 3, height, width, device="meta")
    control = torch.zeros(1, 3, height, width, device="meta")
    negative, positive = sampler.encode_prompt(config.effective_prompt, config.negative_prompt)
    t = torch.tensor(plan.first_timestep, device="meta")

    def flops(fn) -> int:
        with speed_levers(sampler.device, sdpa_backend="math"), torch.inference_mode():
            with FlopCounterMode(display=False) as counter:
                fn()
        return int(counter.get_total_flops())

    z = torch.zeros(latent, device="meta")
    per_eval = flops(lambda: sampler.predict_noise(z, t, positive, control, 1.0))
    vae = flops(lambda: sampler.encode(x)) + flops(lambda: sampler.decode(z))
    step_noise = torch.zeros((plan.k, *latent), device="meta")
    eps = torch.zeros(latent, device="meta")
    math_config = config.replace(sdpa_backend="math")
    total = flops(
        lambda: sampler.generate(x, control, eps, step_noise, negative, positive, plan, math_config)
    )
    evaluations = (1 if config.method in ("zodi", "inst") else 0) + 2 * plan.k
    return {
        "per_image": total,
        "per_evaluation": per_eval,
        "vae": vae,
        "evaluations": evaluations,
        "counted": "torch.utils.flop_counter.FlopCounterMode, math SDPA backend, meta tensors, "
        "batch 1; text encoder excluded",
    }


# 3. Timing -------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return None


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def time_faithful(components, config, inputs, n, rounds) -> tuple[dict[str, Any], list]:
    """The faithful loop on a copy of the components in float32: best of ``rounds``."""
    images, labels, ids = inputs
    fp32 = config.replace(
        dtype="float32", compile=False, channels_last=False, sdpa_backend="auto", tf32=False
    )
    sampler = TransferSampler(copy.deepcopy(components), fp32)
    faithful_transfer(sampler, images[0], labels[0], ids[0], fp32)  # warm-up
    best, cpu, outs = float("inf"), float("inf"), []
    _reset_peak(sampler.device)
    for _ in range(rounds):
        _sync(sampler.device)
        t0, c0 = time.perf_counter(), time.process_time()
        outs = [faithful_transfer(sampler, images[i], labels[i], ids[i], fp32) for i in range(n)]
        _sync(sampler.device)
        best = min(best, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    result = {
        "images": n,
        "s_per_image": best / n,
        "cpu_s_per_image": cpu / n,
        "images_per_s": n / best,
        "peak_mem_gib": _peak_gib(sampler.device),
    }
    device = sampler.device
    del sampler
    _free(device)
    return result, outs


def time_run(
    components, config, inputs, n, rounds, compile_backend="inductor"
) -> tuple[dict[str, Any], list]:
    """Our sampler with ``config``'s levers on a copy of the components: warm-up on one full
    batch (compiles both shapes, autotunes cuDNN), then the best of ``rounds`` over n images."""
    images, labels, ids = inputs
    sampler = TransferSampler(copy.deepcopy(components), config, compile_backend=compile_backend)
    b = config.batch_size
    t0 = time.perf_counter()
    sampler(images[:b], labels[:b], ids[:b])
    _sync(sampler.device)
    warmup = time.perf_counter() - t0
    _reset_peak(sampler.device)
    best, cpu, outs = float("inf"), float("inf"), []
    for _ in range(rounds):
        _sync(sampler.device)
        t0, c0 = time.perf_counter(), time.process_time()
        outs = sampler(images[:n], labels[:n], ids[:n])
        _sync(sampler.device)
        best = min(best, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    result = {
        "dtype": str(sampler.dtype).removeprefix("torch."),
        "images": n,
        "warmup_s": warmup,
        "s_per_image": best / n,
        # process CPU seconds: on a shared CPU, wall time includes waiting for other processes
        "cpu_s_per_image": cpu / n,
        "images_per_s": n / best,
        "peak_mem_gib": _peak_gib(sampler.device),
    }
    device = sampler.device
    del sampler
    _free(device)
    return result, [o.image for o in outs]


def profile_batch(components, config, inputs, path: Path) -> dict[str, float]:
    """One batch of ``config`` after a warm-up batch, under ``torch.profiler`` (CUDA kernels too on
    a GPU), with a ``record_function`` range around each model call; writes the share of the
    profiled time in each model and the top 25 operators to ``path``; returns the shares (%)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    images, labels, ids = inputs
    sampler = TransferSampler(copy.deepcopy(components), config)
    parts = {"vae encode": (sampler.vae, "encode"), "vae decode": (sampler.vae, "decode"),
             "controlnet": (sampler.controlnet, "forward"), "unet": (sampler.unet, "forward")}  # fmt: skip

    def ranged(name, fn):
        def call(*args, **kwargs):
            with record_function(f"zodi: {name}"):
                return fn(*args, **kwargs)

        return call

    for name, (module, attr) in parts.items():
        setattr(module, attr, ranged(name, getattr(module, attr)))
    b = config.batch_size
    sampler(images[:b], labels[:b], ids[:b])  # warm-up
    cuda = sampler.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    _sync(sampler.device)
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        sampler(images[:b], labels[:b], ids[:b])
        _sync(sampler.device)
    wall_us = (time.perf_counter() - t0) * 1e6
    averages = prof.key_averages()
    key = "device_time_total" if cuda else "cpu_time_total"
    ranges = {e.key: getattr(e, key) for e in averages if e.key.startswith("zodi: ")}
    shares = {name: 100 * ranges.get(f"zodi: {name}", 0.0) / wall_us for name in parts}
    lines = [
        f"# Profile: one batch of {b}, {sampler.dtype}, {sampler.device}; "
        f"{wall_us / 1e6 / b:.3f} s/image under the profiler",
        "",
        f"| model | share of the batch's wall time ({key.replace('_', ' ')}) |",
        "|---|---|",
        *(f"| {name} | {share:.1f}% |" for name, share in shares.items()),
        f"| rest (scheduler, CFG, conversions, Python) | {100 - sum(shares.values()):.1f}% |",
        "",
        "```",
        averages.table(sort_by=f"self_{key}", row_limit=25),
        "```",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    del sampler
    _free(torch.device(config.device))
    return shares


# 4. The GPU check's matrix ---------------------------------------------------------------------


def matrix_runs(device_type: str, quick: bool) -> list[dict[str, Any]]:
    """The runs of the GPU check, most informative first (the time budget cuts the tail).

    Each entry sets levers and a batch size over the config's defaults. On CPU (``--quick``
    rehearsal) float32/bfloat16 stand in for float16/bfloat16.
    """
    half, other = ("float16", "bfloat16") if device_type == "cuda" else ("float32", "bfloat16")
    b = 8 if not quick else 2
    runs = [
        {"name": f"{half} b{b}", "dtype": half, "batch_size": b},
        {"name": f"{other} b{b}", "dtype": other, "batch_size": b},
        {"name": f"{half} b{b} channels_last", "dtype": half, "batch_size": b,
         "channels_last": True},
    ]  # fmt: skip
    for size in (1, 4, 16) if not quick else (1,):
        runs.append({"name": f"{half} b{size}", "dtype": half, "batch_size": size})
    runs.append({"name": f"{half} b{b} compile", "dtype": half, "batch_size": b, "compile": True})
    if not quick:
        runs += [
            {"name": f"{half} b{b} no cudnn_benchmark", "dtype": half, "batch_size": b,
             "cudnn_benchmark": False},
            {"name": f"{half} b{b} sdpa flash", "dtype": half, "batch_size": b,
             "sdpa_backend": "flash"},
            {"name": f"{half} b{b} sdpa efficient", "dtype": half, "batch_size": b,
             "sdpa_backend": "efficient"},
            {"name": f"{half} b{b} sdpa cudnn", "dtype": half, "batch_size": b,
             "sdpa_backend": "cudnn"},
            {"name": f"{other} b{b} channels_last", "dtype": other, "batch_size": b,
             "channels_last": True},
            {"name": f"{half} b16 channels_last compile", "dtype": half, "batch_size": 16,
             "channels_last": True, "compile": True},
            {"name": "float32 b8 tf32", "dtype": "float32", "batch_size": 8, "tf32": True},
            {"name": "float32 b8 no tf32", "dtype": "float32", "batch_size": 8, "tf32": False},
        ]  # fmt: skip
    return runs


def markdown_table(summary: dict[str, Any]) -> str:
    """The results as a markdown table (one row per run, the faithful loop first)."""
    f = summary["faithful"]
    rows = [
        f"Machine: {summary['machine']['name']} ({summary['machine']['device']}), torch "
        f"{summary['machine']['torch']}; model {summary['model']}, {summary['size']}, "
        f"T={summary['steps']} S={summary['strength']} k={summary['k']} "
        f"({summary['flops']['evaluations']} ControlNet+UNet evaluations per image, "
        f"{summary['flops']['per_image'] / 1e12:.3g} TFLOP per image).",
        "",
        "| run | dtype | channels_last | compile | sdpa | batch | images | s/image | TFLOP/s "
        "| % of peak | peak GiB | × faithful | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def num(v: float | None, fmt: str) -> str:
        return "–" if v is None else format(v, fmt)

    if f is not None:
        rows.append(
            f"| faithful loop | float32 | no | no | auto | 1 | {f['images']} | "
            f"{num(f['s_per_image'], '.3f')} | {num(f['tflops'], '.3g')} | "
            f"{num(f['pct_of_peak'], '.1f')} | {num(f['peak_mem_gib'], '.1f')} | 1.00 | ok |"
        )
    for r in summary["runs"]:
        rows.append(
            f"| {r['name']} | {r.get('dtype', '–')} | {'yes' if r['channels_last'] else 'no'} | "
            f"{'yes' if r['compile'] else 'no'} | {r['sdpa_backend']} | {r['batch_size']} | "
            f"{r.get('images', '–')} | {num(r.get('s_per_image'), '.3f')} | "
            f"{num(r.get('tflops'), '.3g')} | {num(r.get('pct_of_peak'), '.1f')} | "
            f"{num(r.get('peak_mem_gib'), '.1f')} | {num(r.get('speedup_vs_faithful'), '.2f')} "
            f"| {r['status']} |"
        )
    return "\n".join(rows) + "\n"


# 5. Main ---------------------------------------------------------------------------------------


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--gpu", action="store_true", help="= --device cuda --arch sd15 --size 1024x512"
    )
    ap.add_argument("--device", help="cpu, cuda or cuda:N (default cpu; cuda with --gpu)")
    ap.add_argument("--arch", choices=["sd15", "narrow", "tiny"], help="random-weight model "
                    "(default narrow on CPU, sd15 on CUDA)")  # fmt: skip
    ap.add_argument("--models", help="a models folder (base + controlnet/) instead of --arch")
    ap.add_argument("--size", help="WxH generation size (default 256x128 CPU, 1024x512 CUDA)")
    ap.add_argument("--images", type=int, help="images per run (default: 4 CPU, 16 CUDA)")
    ap.add_argument(
        "--faithful-images",
        type=int,
        help="images for the faithful loop; 0 skips it (default: --images, CUDA 4)",
    )
    ap.add_argument("--batch-size", type=int, help="our batch size (default: 4 CPU, 8 CUDA)")
    ap.add_argument("--rounds", type=int, default=3, help="timing rounds, best kept")
    ap.add_argument("--steps", type=int, default=20, help="T (release: 20)")
    ap.add_argument("--strength", type=float, default=0.9, help="S (night: 0.9)")
    ap.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"])
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument(
        "--compile-backend",
        help="torch.compile backend (default inductor; eager for --quick on CPU, where inductor "
        "compiles C++ for minutes)",
    )
    ap.add_argument("--sdpa-backend", choices=["auto", "math", "flash", "efficient", "cudnn"])
    ap.add_argument("--cudnn-benchmark", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--flops-only", action="store_true", help="count FLOPs only (no timing)")
    ap.add_argument("--matrix", action="store_true", help="the GPU check's matrix of runs")
    ap.add_argument("--quick", action="store_true", help="matrix: tiny models, 2 images a run")
    ap.add_argument("--budget-s", type=float, default=420.0, help="matrix: time budget")
    ap.add_argument(
        "--runs",
        help="matrix: only these runs, comma-separated names as printed (e.g. 'float16 b16')",
    )
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    ap.add_argument("--profile", type=Path, help="profile one batch; markdown written here")
    ap.add_argument("--markdown", type=Path, help="write the results as a markdown table here")
    args = ap.parse_args(argv)
    if args.faithful_images is not None and args.faithful_images < 0:
        ap.error(f"--faithful-images: expected an integer >= 0, received {args.faithful_images}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from diffusers import DDIMScheduler

    args = _parse(argv)
    t_start = time.perf_counter()
    device = args.device or ("cuda" if args.gpu else "cpu")
    cuda = device.startswith("cuda")
    arch = args.arch or ("tiny" if args.quick else "sd15" if cuda else "narrow")
    default_size = "1024x512" if cuda and not args.quick else "128x64" if args.quick else "256x128"
    w, h = (int(v) for v in (args.size or default_size).split("x"))
    n = args.images or (2 if args.quick else 16 if cuda else 4)
    n_faithful = args.faithful_images if args.faithful_images is not None else (
        min(n, 4) if cuda else n
    )  # fmt: skip
    steps = 4 if args.quick and args.steps == 20 else args.steps
    compile_backend = args.compile_backend or ("eager" if args.quick and not cuda else "inductor")
    levers = {k: getattr(args, k) for k in LEVERS if getattr(args, k) is not None}
    base = TransferConfig.preset(
        "default",
        num_inference_steps=steps,
        strength=args.strength,
        short_side=min(w, h),
        batch_size=args.batch_size or (2 if args.quick else 8 if cuda else 4),
        device=device,
        **levers,
    )
    plan = plan_timesteps(DDIMScheduler(**SD15_SCHEDULER), base)
    flops = count_flops(arch if not args.models else "sd15", base, w, h)
    print(
        f"work      {flops['per_image'] / 1e12:.3f} TFLOP per {w}x{h} image: "
        f"{flops['evaluations']} x {flops['per_evaluation'] / 1e12:.3f} TFLOP (ControlNet+UNet, "
        f"batch 1) + VAE {flops['vae'] / 1e12:.3f} ({flops['counted']})",
        flush=True,
    )
    machine = {
        "device": device,
        "name": torch.cuda.get_device_name(device)
        if cuda
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    summary: dict[str, Any] = {
        "machine": machine,
        "model": args.models
        or {
            "sd15": "random-sd15-architecture",
            "narrow": "random-sd15-layout-narrow",
            "tiny": "tiny",
        }[arch],  # fmt: skip
        "size": f"{w}x{h}",
        "steps": steps,
        "strength": args.strength,
        "k": plan.k,
        "flops": flops,
        "compile_backend": compile_backend,
        "faithful": None,
        "runs": [],
        "command": " ".join(["python", "bench/transfer.py", *(argv or sys.argv[1:])]),
    }
    if args.flops_only:
        return _finish(summary, args, t_start)

    peak = next((v for k, v in DENSE_HALF_PEAK_TFLOPS.items() if k in machine["name"]), None)
    if args.models:
        components = load_components(ModelsConfig(base=args.models), device, torch.float32)
    else:
        components = build_components(arch, device)
    runs = matrix_runs("cuda" if cuda else "cpu", args.quick) if args.matrix else [
        {"name": "ours", **levers, "batch_size": base.batch_size}
    ]  # fmt: skip
    if args.runs:
        wanted = [name.strip() for name in args.runs.split(",") if name.strip()]
        unknown = sorted(set(wanted) - {r["name"] for r in runs})
        if unknown:
            raise SystemExit(
                f"bench/transfer.py: error: --runs: no run named {', '.join(map(repr, unknown))}; "
                f"the runs here: {', '.join(r['name'] for r in runs)}"
            )
        runs = [r for r in runs if r["name"] in wanted]
    rounds = 1 if args.matrix else args.rounds
    inputs = make_inputs(max(n, n_faithful, max(r["batch_size"] for r in runs)), w, h)
    print(
        f"device    {machine['name']} ({device}), {w}x{h}, T={steps} S={args.strength} "
        f"k={plan.k}: {flops['evaluations']} ControlNet+UNet evaluations per image",
        flush=True,
    )

    def rate(s_per_image: float) -> tuple[float, float | None]:
        tflops = flops["per_image"] / s_per_image / 1e12
        return tflops, (100 * tflops / peak if peak else None)

    faithful_outs: list = []
    if n_faithful:
        result, faithful_outs = time_faithful(components, base, inputs, n_faithful, rounds)
        result["tflops"], result["pct_of_peak"] = rate(result["s_per_image"])
        summary["faithful"] = result
        print(
            f"faithful  batch 1, float32, CFG as two calls: {result['s_per_image']:.3f} s/image, "
            f"{result['tflops']:.2f} TFLOP/s, {result['cpu_s_per_image']:.2f} CPU s/image",
            flush=True,
        )
    for i, spec in enumerate(runs):
        run_levers = {k: v for k, v in spec.items() if k in LEVERS}
        config = base.replace(batch_size=spec["batch_size"], **run_levers)
        entry: dict[str, Any] = {
            "name": spec["name"],
            "batch_size": config.batch_size,
            **{k: getattr(config, k) for k in LEVERS},
        }
        elapsed = time.perf_counter() - t_start
        n_run = max(n, config.batch_size)  # at least one full batch
        estimate = _estimate(summary["runs"], config, n_run)
        if args.matrix and elapsed + estimate > args.budget_s:
            entry["status"] = f"skipped: time budget ({elapsed:.0f} s + ~{estimate:.0f} s)"
            summary["runs"].append(entry)
            print(f"[{i + 1}/{len(runs)}] {spec['name']}: {entry['status']}", flush=True)
            continue
        try:
            result, outs = time_run(
                components, config, inputs, n_run, rounds, compile_backend=compile_backend
            )
        except Exception as err:  # one failed lever (e.g. no kernel) must not end the matrix
            if not args.matrix:
                raise
            entry["status"] = f"error: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
            summary["runs"].append(entry)
            print(f"[{i + 1}/{len(runs)}] {spec['name']}: {entry['status']}", flush=True)
            _free(torch.device(device))
            continue
        entry.update(result)
        entry["dtype"] = result["dtype"]
        entry["tflops"], entry["pct_of_peak"] = rate(result["s_per_image"])
        entry["status"] = "ok"
        if summary["faithful"]:
            entry["speedup_vs_faithful"] = summary["faithful"]["s_per_image"] / entry["s_per_image"]
            m = min(len(outs), len(faithful_outs))
            entry["mean_abs_diff_vs_faithful"] = max(
                float(np.abs(outs[j].astype(int) - faithful_outs[j]).mean()) for j in range(m)
            )
        summary["runs"].append(entry)
        _write(summary, args, t_start)  # what is measured survives a kill at the time limit
        speedup = entry.get("speedup_vs_faithful")
        print(
            f"[{i + 1}/{len(runs)}] {spec['name']}: {entry['s_per_image']:.3f} s/image, "
            f"{entry['tflops']:.2f} TFLOP/s, {entry['cpu_s_per_image']:.2f} CPU s/image"
            + (f" ({entry['pct_of_peak']:.1f}% of peak)" if entry["pct_of_peak"] else "")
            + (f", {speedup:.2f}x faithful" if speedup else "")
            + (f", peak {entry['peak_mem_gib']:.1f} GiB" if entry["peak_mem_gib"] else "")
            + f", warm-up {entry['warmup_s']:.1f} s",
            flush=True,
        )
    if args.profile:  # last: a profiler that fails on a machine must not lose the runs
        try:
            summary["profile_shares_pct"] = profile_batch(components, base, inputs, args.profile)
            print(f"profile   {summary['profile_shares_pct']} -> {args.profile}", flush=True)
        except Exception as err:
            summary["profile_error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
            print(f"profile   failed: {summary['profile_error']}", flush=True)
    return _finish(summary, args, t_start)


def _estimate(done: list[dict[str, Any]], config: TransferConfig, n: int) -> float:
    """Seconds a run will take, from the slowest finished run's per-image time."""
    times = [r["s_per_image"] for r in done if r.get("status") == "ok"]
    per_image = max(times) if times else 0.0
    warmup = max((r["warmup_s"] for r in done if r.get("status") == "ok"), default=0.0)
    return (
        per_image * (n + config.batch_size)
        + warmup
        + (COMPILE_ESTIMATE_S if config.compile else 0.0)
    )


def _write(summary: dict[str, Any], args: argparse.Namespace, t_start: float) -> None:
    summary["elapsed_s"] = time.perf_counter() - t_start
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown_table(summary))


def _finish(summary: dict[str, Any], args: argparse.Namespace, t_start: float) -> dict[str, Any]:
    _write(summary, args, t_start)
    print(json.dumps({k: summary[k] for k in ("size", "k", "flops", "elapsed_s")}), flush=True)
    return summary


if __name__ == "__main__":
    main()
