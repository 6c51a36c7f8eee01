"""Overlapped I/O in the transfer runner: serial vs overlapped wall time, and the PNG level.

1. ``--png-levels``: encode time and size of one 512×1024 generated-size image at zlib levels
   0..9 (PNG is lossless at every level; the runner's level, ``PNG_COMPRESS_LEVEL``, is chosen
   from this table). Three images bracket what a generator makes: a synthetic street scene
   (``zodi synth``'s renderer, with its texture), the same scene blurred (σ = 2 px: smooth, as
   diffusion outputs often are) and with Gaussian noise added (σ = 8 levels, like sensor noise).
2. Default: one shard of ``--images`` synthetic 2048×1024 Cityscapes-like sources, generated at
   1024×512 (short side 512, what the paper's set-up generates) on CPU by a *micro* model: SD
   1.5's architecture (VAE /8, UNet + ControlNet, CLIP text encoder) shrunk below ``zodi
   tiny-models`` (4-8 channels, attention only at the lowest UNet resolution, none in the VAE),
   since the tiny models' attention at full latent resolution takes tens of seconds per image
   here; ``--steps`` makes model time and I/O time comparable. On a CPU with no idle core the
   model and the I/O share the cores, so ``--gpu-standin S`` replaces the model by a stand-in
   that sleeps S s/image (the GPU target is 0.2): the CPU is then free for the I/O, as beside a
   GPU, and the I/O is real. The same shard runs
   with ``overlap=False`` (read, decode, resize, model, encode, store one after another) and
   ``overlap=True`` (loader and writer threads beside the model), alternated, best of
   ``--rounds``. Prints model time, I/O time (serial wall − model), both walls, the ideal
   max(model, I/O), and the model-busy fraction (model time / wall).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python bench/overlap.py [--images 8] [--steps 1]``;
``--quick`` for a fast variant (4 images at 1024×512 sources, short side 256);
``--png-levels`` for the table. Last line: a JSON summary. Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def png_levels(repeat: int) -> list[dict[str, float]]:
    """Encode a 1024×512 scene at each zlib level: best-of-``repeat`` ms and size in KiB."""
    from PIL import Image, ImageFilter

    from zodi_core.datasets.synth import generate_scene, render_scene

    rng = np.random.default_rng(0)
    scene = render_scene(generate_scene(rng, (1024, 512)), rng)
    noise = rng.normal(0.0, 8.0, scene.shape)
    textured = np.clip(scene.astype(np.float64) + noise, 0, 255).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(scene).filter(ImageFilter.GaussianBlur(2)))
    rows = []
    for level in range(10):
        row: dict[str, float] = {"level": level}
        for name, image in (("smooth", smooth), ("scene", scene), ("textured", textured)):
            pil = Image.fromarray(image)
            best = float("inf")
            for _ in range(repeat):
                buf = io.BytesIO()
                t0 = time.perf_counter()
                pil.save(buf, format="PNG", compress_level=level)
                best = min(best, time.perf_counter() - t0)
            row[f"{name}_ms"] = round(best * 1000, 1)
            row[f"{name}_kib"] = round(len(buf.getvalue()) / 1024, 1)
        rows.append(row)
    return rows


def micro_components():
    """SD 1.5's components shrunk to a few channels (random weights; see the module docstring)."""
    import dataclasses

    import torch
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

    from zodi_core.transfer.models import build_tiny_components

    tiny = build_tiny_components(seed=0)  # text encoder, tokenizer, scheduler
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(4, 8, 8),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 4, 8, 8))
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(4, 4, 4, 4),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        scaling_factor=0.18215,
        mid_block_add_attention=False,
    )
    for m in (unet, controlnet, vae):
        m.eval().requires_grad_(False)
    revisions = {"base": "micro (bench/overlap.py)"}
    return dataclasses.replace(tiny, unet=unet, controlnet=controlnet, vae=vae, revisions=revisions)


class GpuStandIn:
    """The sampler's stand-in for ``--gpu-standin S``: sleeps S seconds per image, leaving the
    CPU free as a GPU does, and returns each (already resized) source as its generated image;
    the runner's I/O around it is real. It measures whether the I/O keeps up with a GPU."""

    seconds_per_image = 0.2

    def __init__(self, components, config) -> None:
        import copy

        from zodi_core.transfer.sampler import TransferSampler

        self.components, self.config = components, config.resolved()
        self.scheduler = copy.deepcopy(components.scheduler)
        self.lineage = functools.partial(TransferSampler.lineage, self)

    def __call__(self, images, labels, sample_ids, config=None):
        from zodi_core.transfer.sampler import TransferOutput

        config = self.config if config is None else config.resolved()
        time.sleep(self.seconds_per_image * len(images))
        outs = []
        for image, sid in zip(images, sample_ids, strict=True):
            meta = self.lineage(config, sid, digest="")
            meta.update(seconds=self.seconds_per_image, width=image.shape[1], height=image.shape[0])
            outs.append(TransferOutput(np.ascontiguousarray(image), meta))
        return outs


def overlap_bench(args: argparse.Namespace) -> dict[str, float]:
    from unittest import mock

    import torch

    from zodi_core.config import DatasetSpec, TransferConfig
    from zodi_core.datasets.ingest import ingest_dataset
    from zodi_core.datasets.synth import write_synthetic
    from zodi_core.transfer import runner
    from zodi_core.transfer.runner import transfer_manifest

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="zodi-bench-overlap-"))
    width, height = args.source_size
    data = write_synthetic(
        tmp / "data", size=(width, height), n_train=args.images, n_val=0, n_target=0, n_gta=0
    )
    spec = DatasetSpec(dataset="cityscapes", root=data["cityscapes"], split="train")
    samples = ingest_dataset(spec, str(tmp / "samples.parquet"), progress=False).manifest_uri
    config = TransferConfig.preset(
        "demo",
        num_inference_steps=args.steps,
        strength=1.0,
        short_side=args.short_side,
        batch_size=args.batch_size,
        models={"base": "micro", "controlnet": None},
    )
    components = micro_components()
    standin = mock.patch.object(runner, "TransferSampler", GpuStandIn)
    if args.gpu_standin is not None:
        GpuStandIn.seconds_per_image = args.gpu_standin
        standin.start()

    best: dict[str, dict[str, float]] = {}
    for r in range(args.rounds):
        for mode in ("serial", "overlapped"):
            t0 = time.perf_counter()
            result = transfer_manifest(
                samples,
                config,
                str(tmp / f"{mode}{r}"),
                components=components,
                progress=False,
                overlap=mode == "overlapped",
            )
            wall = time.perf_counter() - t0
            if result.written != args.images:
                raise SystemExit(f"{mode}: wrote {result.written} of {args.images} images")
            if mode not in best or wall < best[mode]["wall"]:
                best[mode] = {"wall": wall, **result.timings}
    if args.gpu_standin is not None:
        standin.stop()
    serial, over = best["serial"], best["overlapped"]
    model = serial["model"]
    io_s = serial["wall"] - model
    return {
        "images": args.images,
        "source": f"{width}x{height}",
        "generated_short_side": args.short_side,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "torch_threads": args.threads,
        "model": "micro" if args.gpu_standin is None else f"GPU stand-in {args.gpu_standin} s/img",
        "model_s": round(model, 2),
        "io_s": round(io_s, 2),
        "serial_wall_s": round(serial["wall"], 2),
        "overlapped_wall_s": round(over["wall"], 2),
        "ideal_max_s": round(max(model, io_s), 2),
        "overlapped_over_ideal": round(over["wall"] / max(model, io_s), 3),
        "overlapped_over_serial": round(over["wall"] / serial["wall"], 3),
        "model_busy_serial": round(serial["model"] / serial["wall"], 3),
        "model_busy_overlapped": round(over["model"] / over["wall"], 3),
        "overlapped_model_s": round(over["model"], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--steps", type=int, default=1, help="DDIM steps (strength 1.0: all of them)")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--short-side", type=int, default=512)
    ap.add_argument("--source-size", type=lambda s: tuple(map(int, s.split("x"))),
                    default=(2048, 1024), help="WIDTHxHEIGHT of the synthetic sources")  # fmt: skip
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--gpu-standin", type=float, metavar="S",
                    help="instead of the micro model, a stand-in that sleeps S s/image (CPU free, "
                    "as with a GPU); the I/O stays real")  # fmt: skip
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="4 images, 1024x512 sources, side 256")
    ap.add_argument("--png-levels", action="store_true", help="only the PNG level table")
    args = ap.parse_args()
    machine = f"{os.cpu_count()}-core CPU ({platform.machine()}), no GPU"
    if args.png_levels:
        rows = png_levels(repeat=5)
        print(f"PNG encode of one 1024x512 RGB image, best of 5, {machine}")
        names = ("smooth", "scene", "textured")
        print("| level | " + " | ".join(f"{n} ms | {n} KiB" for n in names) + " |")
        print("|---" * (1 + 2 * len(names)) + "|")
        for r in rows:
            cells = " | ".join(f"{r[f'{n}_ms']} | {r[f'{n}_kib']}" for n in names)
            print(f"| {r['level']} | {cells} |")
        print(json.dumps({"machine": machine, "png_levels": rows}))
        return
    if args.quick:
        args.images, args.source_size, args.short_side, args.rounds = 4, (1024, 512), 256, 1
    out = overlap_bench(args)
    print(
        f"{out['images']} images {out['source']} → short side {out['generated_short_side']}, "
        f"{out['steps']} steps, batch {out['batch_size']}, {out['model']}, {machine}, "
        f"torch threads {out['torch_threads']}"
    )
    print(f"model {out['model_s']} s, I/O {out['io_s']} s (serial wall − model)")
    print(
        f"serial {out['serial_wall_s']} s (model busy {out['model_busy_serial']:.0%}); "
        f"overlapped {out['overlapped_wall_s']} s (model busy {out['model_busy_overlapped']:.0%}); "
        f"ideal max(model, I/O) {out['ideal_max_s']} s; overlapped/ideal "
        f"{out['overlapped_over_ideal']}, overlapped/serial {out['overlapped_over_serial']}"
    )
    print(json.dumps({"machine": machine, **out}))


if __name__ == "__main__":
    main()
