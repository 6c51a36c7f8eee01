"""Time and peak memory of one paired training step: 'concat' against 'release' (SPEC §3).

Both schemes train the same ZoDiSegmentor on the same batch of pairs; each scheme runs in its own
subprocess so that peak memory is its own (CPU: peak RSS above the RSS before the first step;
GPU: ``torch.cuda.max_memory_allocated``).

    python bench/train_step.py                 # CPU: tiny ResNet-18 DeepLabv3+, 4 pairs, 192x384
    python bench/train_step.py --gpu           # GPU: the release's R-50 DeepLabv3+, 4 pairs, 384x768
    python bench/train_step.py --json out.json

Prints a Markdown table (seconds per step, pairs/s, peak memory, concat/release ratios).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "zodi_core" / "seg" / "configs"
MODELS = {
    "tiny": "_base_/models/deeplabv3plus_r18-tiny.py",
    "r50-release": "_base_/models/deeplabv3plus_r50-release.py",
}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(args: argparse.Namespace) -> dict:
    """Run ``args.steps`` timed steps of one scheme; return its figures."""
    import torch
    from mmengine.config import Config, ConfigDict
    from mmengine.optim import OptimWrapper
    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS as REGISTRY
    from mmseg.structures import SegDataSample

    import zodi_core.seg  # noqa: F401  (registers ZoDiSegmentor)

    init_default_scope("mmseg")
    torch.manual_seed(0)
    h, w = args.height, args.width
    seg = Config.fromfile(str(CONFIGS / MODELS[args.model])).model
    seg.backbone.init_cfg = None  # timing does not need ImageNet weights
    seg.backbone.norm_cfg = seg.decode_head.norm_cfg = dict(type="BN", requires_grad=True)
    seg.data_preprocessor.size = (h, w)
    model = REGISTRY.build(ConfigDict(type="ZoDiSegmentor", segmentor=seg, scheme=args.scheme))
    device = torch.device("cuda" if args.gpu else "cpu")
    model = model.to(device).train()
    optim = OptimWrapper(
        torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    )

    g = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(args.batch):
        s = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 19, (1, h, w), generator=g))
        samples.append(s)
    images = [
        torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
        for _ in range(2 * args.batch)
    ]

    def batch() -> dict:
        return {"inputs": images[: args.batch], "gen_inputs": images[args.batch :],
                "data_samples": [s.clone() for s in samples]}  # fmt: skip

    def sync() -> None:
        if args.gpu:
            torch.cuda.synchronize()

    rss0 = _rss_bytes()
    for _ in range(args.warmup):
        model.train_step(batch(), optim)
    sync()
    if args.gpu:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        model.train_step(batch(), optim)
        sync()
        times.append(time.perf_counter() - start)
    times.sort()
    median = times[len(times) // 2]
    if args.gpu:
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
    return {
        "scheme": args.scheme,
        "device": torch.cuda.get_device_name() if args.gpu else f"cpu x{torch.get_num_threads()}",
        "model": args.model,
        "pairs": args.batch,
        "size": f"{h}x{w}",
        "s_per_step": median,
        "pairs_per_s": args.batch / median,
        "peak_mib": peak / 2**20,
        "peak_kind": "cuda max_memory_allocated" if args.gpu else "RSS above pre-step RSS",
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--gpu", action="store_true", help="R-50 release model on CUDA, 4 pairs 384x768")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 10 CPU, 30 GPU)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=4, help="pairs per step (paper: 4)")
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--json", help="also write the figures here")
    p.add_argument("--scheme", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.scheme:  # inside a worker subprocess
        print(json.dumps(worker(args)))
        return
    model = "r50-release" if args.gpu else "tiny"
    height = args.height or (384 if args.gpu else 192)
    width = args.width or (768 if args.gpu else 384)
    steps = args.steps or (30 if args.gpu else 10)
    results = {}
    for scheme in ("release", "concat"):
        cmd = [sys.executable, __file__, "--scheme", scheme, "--model", model, "--steps", str(steps),
               "--warmup", str(args.warmup), "--batch", str(args.batch), "--height", str(height),
               "--width", str(width)] + (["--gpu"] if args.gpu else [])  # fmt: skip
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        results[scheme] = json.loads(out.strip().splitlines()[-1])
    r, c = results["release"], results["concat"]
    ratio = {"time_concat_over_release": c["s_per_step"] / r["s_per_step"],
             "peak_concat_over_release": c["peak_mib"] / r["peak_mib"] if r["peak_mib"] else None}  # fmt: skip
    print(f"device: {r['device']}; model {model}; {args.batch} pairs of {height}x{width}; "
          f"median of {steps} steps after {args.warmup} warm-up")  # fmt: skip
    print("| scheme | s/step | pairs/s | peak MiB |")
    print("|---|---|---|---|")
    for s in (r, c):
        print(
            f"| {s['scheme']} | {s['s_per_step']:.4f} | {s['pairs_per_s']:.2f} | {s['peak_mib']:.1f} |"
        )
    peak = ratio["peak_concat_over_release"]
    print(f"concat/release: time {ratio['time_concat_over_release']:.3f}, "
          f"peak memory {peak:.3f} ({r['peak_kind']})" if peak else "")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
