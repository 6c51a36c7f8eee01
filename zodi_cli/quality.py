"""``zodi score``, ``zodi tune-strength`` and ``zodi tiny-clip``: quality of generated images."""

from __future__ import annotations

import argparse
from typing import Any

from zodi_cli._common import RunFailed, command, count, field_options, given, shared, size
from zodi_cli.transfer import DOMAIN, build_config
from zodi_core.config import CLIP_MODEL_ID, QualityConfig

#: The scorers' options (score, tune-strength).
SCORERS: dict[str, Any] = {
    "--seg-config": "mmseg config of the layout scorer (file, bundled, mmseg::)",
    "--seg-checkpoint": "its checkpoint (local or s3://)",
    "--clip": {"default": CLIP_MODEL_ID, "help": f"CLIP hub id or folder (default: {CLIP_MODEL_ID})"},
    "--no-clip": {"action": "store_true", "help": "no CLIP scores"},
    "--scale": {"type": size, "help": "WIDTHxHEIGHT the segmentation model sees (default: "
                "each image's size)"},
    **shared("--batch-size", default=8, help="images per CLIP batch"),
    **shared("--device", default="auto"),
}  # fmt: skip


def add_parsers(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    command(sub, parent, "score", run_score,
        "score every generated image of a paired manifest (layout, CLIP)",
        "Layout consistency (a segmentation model's mIoU and pixel accuracy on the generated "
        "image against the source label) and prompt alignment (CLIP score and CLIP directional "
        "similarity) per generated image. Reads images, never generates one. Writes the manifest "
        "with its score columns; with a filter option, also flags rows (kept, drop_reason; none "
        "deleted) and writes the kept rows as the training manifest.",
        {
            "--manifest": {"required": True, "help": "paired (transfer) manifest"},
            "--out": "scored manifest (default: scored.parquet beside --manifest)",
            "--train-out": "kept rows (default: train.parquet beside --out)",
            **SCORERS,
            **field_options(QualityConfig, "min_layout_miou", "min_clip", "drop_lowest_fraction"),
            "--worst": {"type": int, "default": 0, "help": "write a grid of the N worst images"},
        },
    )  # fmt: skip
    command(sub, parent, "tune-strength", run_tune_strength,
        "choose the strength without target images: layout vs prompt alignment",
        "Transfers the first --n samples of a (source val) samples manifest at each strength, "
        "scores them, writes one plot (layout mIoU against CLIP directional similarity) and one "
        "table, and recommends the strongest strength whose layout mIoU stays within --margin "
        "points of the lowest strength's.",
        {
            "--manifest": {"required": True, "help": "samples manifest (source val split)"},
            **DOMAIN,
            "--prompt": "the domain's prompt (required for a user-defined domain)",
            "--strengths": {"default": "0.4,0.5,0.6,0.7,0.8,0.9", "help": "comma-separated"},
            "--n": {"type": count, "default": 8, "help": "samples to transfer (default: 8)"},
            "--margin": {"type": float, "default": 5.0, "help": "layout mIoU margin, points"},
            "--out": {"required": True, "help": "output root (local folder or s3://)"},
            **shared("--preset", "--models", "--controlnet", "--steps"),
            **SCORERS,
        },
    )  # fmt: skip
    command(sub, parent, "tiny-clip", run_tiny_clip,
        "write a tiny random-weight CLIP (tests, demo)",
        "A tiny CLIP with the real architecture and random weights, loadable with --clip DIR "
        "(and quality.clip in a pipeline config).",
        shared("--out", "--seed"),
    )  # fmt: skip


def _load_scorers(args: argparse.Namespace) -> tuple[Any, Any]:
    """(seg model or None, CLIP or None) from the command line."""
    from zodi_core.device import resolve_device
    from zodi_core.evaluation import load_model
    from zodi_core.quality.clip import load_clip

    if bool(args.seg_config) != bool(args.seg_checkpoint):
        raise ValueError("--seg-config and --seg-checkpoint: give both (layout scores) or neither")
    if args.no_clip and not args.seg_config:
        raise ValueError("--no-clip without --seg-config: nothing to score; give a scorer")
    device = str(resolve_device(args.device, "float32", auto_half=False)[0])
    seg_model = (
        load_model(args.seg_config, args.seg_checkpoint, device) if args.seg_config else None
    )
    return seg_model, None if args.no_clip else load_clip(args.clip, device)


def run_score(args: argparse.Namespace) -> dict[str, Any]:
    from zodi_core import storage
    from zodi_core.quality import figures, filtering, scores

    if not storage.exists(args.manifest):
        raise FileNotFoundError(f"--manifest: {args.manifest!r} does not exist")
    out = args.out or storage.join_uri(storage.split_uri(args.manifest)[0], "scored.parquet")
    folder = storage.split_uri(out)[0]
    seg_model, clip = _load_scorers(args)
    pred_uri = storage.join_uri(folder, "predictions") if seg_model else None
    summary = scores.score_manifest(
        args.manifest, out, seg_model=seg_model, clip=clip, batch_size=args.batch_size,
        scale=args.scale, predictions_uri=pred_uri if args.worst else None, progress=True,
    )  # fmt: skip
    means = ", ".join(f"{k} {v}" for k, v in summary["mean"].items() if v is not None)
    print(f"[score] {summary['scored']} images scored ({means}) → {out}")
    if thresholds := given(args, ("min_layout_miou", "min_clip", "drop_lowest_fraction")):
        train = args.train_out or storage.join_uri(folder, "train.parquet")
        flt = filtering.apply_filter(out, out, train, **thresholds)
        why = ", ".join(f"{k}: {v}" for k, v in flt["by_reason"].items()) or "-"
        print(f"[score] filter: {flt['kept']} kept, {flt['dropped']} dropped ({why}) → {train}")
        summary["filter"] = flt
    if args.worst:
        png, rows = figures.render_worst_grid(out, args.worst, predictions_uri=pred_uri)
        grid = storage.write_bytes(storage.join_uri(folder, "worst.png"), png)
        print(f"[score] {len(rows)} worst generations → {grid}")
        summary["worst_grid"] = grid
    return summary


def run_tune_strength(args: argparse.Namespace) -> dict[str, Any]:
    from zodi_core.transfer import tune
    from zodi_core.transfer.preview import parse_strengths

    strengths = parse_strengths(args.strengths)
    config = build_config(args, ("num_inference_steps",))
    seg_model, clip = _load_scorers(args)
    try:
        out = tune.tune_strength(
            args.manifest, config, strengths, args.out, n=args.n, seg_model=seg_model,
            clip=clip, margin=args.margin, scale=args.scale, progress=True,
        )  # fmt: skip
    except RuntimeError as err:
        raise RunFailed(f"{err}; fix the inputs and rerun", {}) from None
    print(tune.render_tune_markdown(out["rows"], out["recommended"], args.margin, args.domain))
    print(f"[tune-strength] plot → {out['plot']}; table → {out['table']}")
    return out


def run_tiny_clip(args: argparse.Namespace) -> dict[str, Any]:
    from zodi_core.quality.clip import write_tiny_clip

    out = write_tiny_clip(args.out, seed=args.seed)
    print(f"[tiny-clip] tiny CLIP (random weights) → {out}; use --clip {out}")
    return {"out": str(out)}
