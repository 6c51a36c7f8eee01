"""What a pocket training step costs under each speed lever (docs/fidelity.md §1).

The pocket models' layout target needs more VAE and ControlNet steps than fit the 60-minute CPU
budget at today's rates. This times one training step of the UNet phase and of the ControlNet
phase (forward, backward, gradient clipping, AdamW) of a preset's models, random weights and
data (a step's cost does not depend on them), under each lever:

- ``eager``: what ``zodi pocket-models`` runs today (float32);
- ``bf16``: ``torch.autocast("cpu", torch.bfloat16)`` around forward and loss (diffusers'
  ``--mixed_precision bf16``; AdamW keeps float32 weights);
- ``compile``: ``torch.compile`` of the UNet and ControlNet (inductor), float32.

It prints each lever's steady seconds per step (median of ``--steps`` after ``--warmup``), its
ratio to eager, and its warm-up seconds (compilation included). Ratios measured in one run on one
machine; run it idle.

    OMP_NUM_THREADS=2 python bench/pocket_speed.py --preset full --threads 2

``--unet-channels 48,96,96`` times the preset with a wider UNet (hence ControlNet, a copy of its
encoder): what more capacity would cost a step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any


def _step_fn(phase: str, spec: Any, mode: str) -> Any:
    """A closure running one training step of ``phase``."""
    import contextlib

    import torch

    from zodi_core.pocket.train import build_controlnet, build_unet

    torch.manual_seed(0)
    unet = build_unet(spec)
    controlnet = build_controlnet(unet, spec) if phase == "controlnet" else None
    trained = unet if controlnet is None else controlnet
    if controlnet is not None:
        unet.requires_grad_(False)
    run_unet, run_cn = unet, controlnet
    if mode == "compile":
        run_unet = torch.compile(unet)
        run_cn = None if controlnet is None else torch.compile(controlnet)
    params = [p for p in trained.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    bs, f = spec.batch_size, 2 ** (len(spec.vae_channels) - 1)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(bs, 4, spec.height // f, spec.width // f, generator=g)
    emb = torch.randn(bs, 77, spec.text_width, generator=g)
    cond = torch.rand(bs, 3, spec.height, spec.width, generator=g)
    t = torch.randint(0, 1000, (bs,), generator=g)
    eps = torch.randn(z.shape, generator=g)
    autocast = (
        (lambda: torch.autocast("cpu", dtype=torch.bfloat16))
        if mode == "bf16"
        else contextlib.nullcontext
    )

    def step() -> None:
        with autocast():
            down, mid = (None, None) if run_cn is None else run_cn(
                z, t, encoder_hidden_states=emb, controlnet_cond=cond, return_dict=False
            )  # fmt: skip
            pred = run_unet(
                z, t, encoder_hidden_states=emb,
                down_block_additional_residuals=down, mid_block_additional_residual=mid,
            ).sample  # fmt: skip
            loss = ((pred.float() - eps) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    return step


def time_lever(phase: str, spec: Any, mode: str, warmup: int, steps: int) -> dict[str, float]:
    step = _step_fn(phase, spec, mode)
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    warm = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t1 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t1)
    return {"warmup_s": round(warm, 1), "s_per_step": statistics.median(times)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="full", help="pocket preset whose models are timed")
    ap.add_argument("--levers", default="eager,bf16,compile", help="comma-separated")
    ap.add_argument("--phases", default="unet,controlnet", help="comma-separated")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps (compilation)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    ap.add_argument("--unet-channels", help="comma-separated UNet widths instead of the preset's")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)

    import torch

    from zodi_core.pocket.train import PRESETS

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.preset not in PRESETS:
        ap.error(f"--preset {args.preset!r}: one of {', '.join(PRESETS)}")
    spec = PRESETS[args.preset]
    if args.unet_channels:
        from dataclasses import replace

        widths = tuple(int(w) for w in args.unet_channels.split(","))
        if len(widths) != len(spec.unet_channels) or any(w % spec.unet_norm_groups for w in widths):
            ap.error(f"--unet-channels: {len(spec.unet_channels)} widths, each a multiple of "
                     f"{spec.unet_norm_groups} (the GroupNorm groups)")  # fmt: skip
        spec = replace(spec, unet_channels=widths)
    levers = [m.strip() for m in args.levers.split(",") if m.strip()]
    for m in levers:
        if m not in ("eager", "bf16", "compile"):
            ap.error(f"--levers: unknown lever {m!r} (eager, bf16, compile)")
    rows: dict[str, dict[str, dict[str, float]]] = {}
    for phase in [p.strip() for p in args.phases.split(",") if p.strip()]:
        if phase not in ("unet", "controlnet"):
            ap.error(f"--phases: unknown phase {phase!r} (unet, controlnet)")
        for mode in levers:
            r = time_lever(phase, spec, mode, args.warmup, args.steps)
            rows.setdefault(phase, {})[mode] = r
            base = rows[phase].get("eager", {}).get("s_per_step")
            ratio = f"{base / r['s_per_step']:.2f}x eager" if base else ""
            print(
                f"{phase:10s} {mode:8s} {r['s_per_step']:.3f} s/step  "
                f"warm-up {r['warmup_s']:.1f} s  {ratio}",
                flush=True,
            )
    machine = (
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {spec.batch_size}, "
        f"UNet widths {spec.unet_channels}"
    )
    print(f"preset {args.preset}: {machine}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"preset": args.preset, "machine": machine, "phases": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
