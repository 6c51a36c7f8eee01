"""``zodi score``, ``zodi tune-strength`` and ``zodi tiny-clip``: quality of generated images."""

from __future__ import annotations

import argparse
from typing import Any

from zodi_cli._common import RunFailed, models_overrides
from zodi_cli.transfer import DOMAIN_HELP, domain_arg
from zodi_core.config import CLIP_MODEL_ID, DOMAINS


def add_parsers(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "score",
        parents=[parent],
        help="score every generated image of a paired manifest (layout, CLIP)",
        description="Layout consistency (a segmentation model's mIoU and pixel accuracy on the "
        "generated image against the source label) and prompt alignment (CLIP score and CLIP "
        "directional similarity) per generated image. Reads images, never generates one. Writes "
        "the manifest with its score columns; with a filter option, also flags rows (kept, "
        "drop_reason; none deleted) and writes the kept rows as the training manifest.",
    )
    p.add_argument("--manifest", required=True, help="paired (transfer) manifest")
    p.add_argument("--out", help="scored manifest (default: scored.parquet beside --manifest)")
    p.add_argument("--train-out", help="kept rows (default: train.parquet beside --out)")
    _add_scorers(p)
    p.add_argument("--min-layout-miou", type=float, help="drop rows below this layout mIoU (%%)")
    p.add_argument("--min-clip", type=float, help="drop rows below this CLIP score")
    p.add_argument(
        "--drop-lowest-fraction", type=float, help="also drop this fraction of lowest layout mIoU"
    )
    p.add_argument("--worst", type=int, default=0, help="write a grid of the N worst images")
    p.set_defaults(func=run_score)

    p = sub.add_parser(
        "tune-strength",
        parents=[parent],
        help="choose the strength without target images: layout vs prompt alignment",
        description="Transfers the first --n samples of a (source val) samples manifest at each "
        "strength, scores them, writes one plot (layout mIoU against CLIP directional "
        "similarity) and one table, and recommends the strongest strength whose layout mIoU "
        "stays within --margin points of the lowest strength's.",
    )
    p.add_argument("--manifest", required=True, help="samples manifest (source val split)")
    p.add_argument("--domain", required=True, type=domain_arg, help=DOMAIN_HELP)
    p.add_argument("--prompt", help="the domain's prompt (required for a user-defined domain)")
    p.add_argument("--strengths", default="0.4,0.5,0.6,0.7,0.8,0.9", help="comma-separated")
    p.add_argument("--n", type=int, default=8, help="samples to transfer (default: 8)")
    p.add_argument("--margin", type=float, default=5.0, help="layout mIoU margin, points")
    p.add_argument("--out", required=True, help="output root (local folder or s3://)")
    p.add_argument(
        "--preset", default="default", choices=("paper", "default", "demo"),
        help="transfer settings preset (default: default)",
    )  # fmt: skip
    p.add_argument("--models", help="base model: hub id or local folder (with controlnet/ inside)")
    p.add_argument("--controlnet", help="ControlNet: hub id or local folder")
    p.add_argument("--steps", type=int, help="T, DDIM steps of the full schedule")
    _add_scorers(p)
    p.set_defaults(func=run_tune_strength)

    p = sub.add_parser(
        "tiny-clip",
        parents=[parent],
        help="write a tiny random-weight CLIP (tests, demo)",
        description="A tiny CLIP with the real architecture and random weights, loadable with "
        "--clip DIR (and quality.clip in a pipeline config).",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    p.set_defaults(func=run_tiny_clip)


def _add_scorers(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--seg-config", help="mmseg config of the layout scorer (file, bundled, mmseg::)"
    )
    p.add_argument("--seg-checkpoint", help="its checkpoint (local or s3://)")
    p.add_argument(
        "--clip", default=CLIP_MODEL_ID, help=f"CLIP hub id or folder (default: {CLIP_MODEL_ID})"
    )
    p.add_argument("--no-clip", action="store_true", help="no CLIP scores")
    p.add_argument("--scale", help="WxH the segmentation model sees (default: each image's size)")
    p.add_argument("--batch-size", type=int, default=8, help="images per CLIP batch")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def _scale(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--scale: expected WxH such as 1024x512, received {text!r}") from None
    if w < 1 or h < 1:
        raise ValueError(f"--scale: expected positive sides, received {text!r}")
    return w, h


def _load_scorers(args: argparse.Namespace) -> tuple[Any, Any]:
    """(seg model or None, CLIP or None) from the command line."""
    from zodi_core.device import resolve_device
    from zodi_core.quality.clip import load_clip

    if bool(args.seg_config) != bool(args.seg_checkpoint):
        raise ValueError("--seg-config and --seg-checkpoint: give both (layout scores) or neither")
    if args.no_clip and not args.seg_config:
        raise ValueError("--no-clip without --seg-config: nothing to score; give a scorer")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size: expected an integer >= 1, received {args.batch_size}")
    device, _ = resolve_device(args.device, "float32", auto_half=False)
    seg_model = clip = None
    if args.seg_config:
        from zodi_core.evaluation import load_model

        seg_model = load_model(args.seg_config, args.seg_checkpoint, str(device))
    if not args.no_clip:
        clip = load_clip(args.clip, str(device))
    return seg_model, clip


def run_score(args: argparse.Namespace) -> dict[str, Any]:
    from zodi_core import storage
    from zodi_core.quality import figures, filtering, scores

    scale = _scale(args.scale)
    if not storage.exists(args.manifest):
        raise FileNotFoundError(f"--manifest: {args.manifest!r} does not exist")
    folder = storage.split_uri(args.manifest)[0]
    out = args.out or storage.join_uri(folder, "scored.parquet")
    seg_model, clip = _load_scorers(args)
    pred_uri = storage.join_uri(storage.split_uri(out)[0], "predictions") if seg_model else None
    summary = scores.score_manifest(
        args.manifest, out, seg_model=seg_model, clip=clip, batch_size=args.batch_size,
        scale=scale, predictions_uri=pred_uri if args.worst else None, progress=True,
    )  # fmt: skip
    means = ", ".join(f"{k} {v}" for k, v in summary["mean"].items() if v is not None)
    print(f"[score] {summary['scored']} images scored ({means}) → {out}")
    filters = (args.min_layout_miou, args.min_clip, args.drop_lowest_fraction)
    if any(v is not None for v in filters):
        train = args.train_out or storage.join_uri(storage.split_uri(out)[0], "train.parquet")
        flt = filtering.apply_filter(
            out, out, train, min_layout_miou=args.min_layout_miou, min_clip=args.min_clip,
            drop_lowest_fraction=args.drop_lowest_fraction or 0.0,
        )  # fmt: skip
        why = ", ".join(f"{k}: {v}" for k, v in flt["by_reason"].items()) or "-"
        print(f"[score] filter: {flt['kept']} kept, {flt['dropped']} dropped ({why}) → {train}")
        summary["filter"] = flt
    if args.worst:
        png, rows = figures.render_worst_grid(out, args.worst, predictions_uri=pred_uri)
        grid = storage.write_bytes(storage.join_uri(storage.split_uri(out)[0], "worst.png"), png)
        print(f"[score] {len(rows)} worst generations → {grid}")
        summary["worst_grid"] = grid
    return summary


def run_tune_strength(args: argparse.Namespace) -> dict[str, Any]:
    from zodi_core.config import TransferConfig
    from zodi_core.transfer import tune
    from zodi_core.transfer.preview import parse_strengths

    strengths = parse_strengths(args.strengths)
    if args.n < 1:
        raise ValueError(f"--n: expected an integer >= 1, received {args.n}")
    overrides: dict[str, Any] = {"domain": args.domain}
    if args.prompt is not None:
        overrides["prompt"] = args.prompt
    elif args.domain not in DOMAINS:
        raise ValueError(
            f"--domain {args.domain}: not a built-in domain ({', '.join(DOMAINS)}); describe it "
            f"with --prompt (e.g. --prompt 'driving at {args.domain}, best quality')"
        )
    if args.steps is not None:
        overrides["num_inference_steps"] = args.steps
    config = TransferConfig.preset(args.preset, **overrides)
    models = {**config.models.model_dump(), **models_overrides(args.models, args.controlnet)}
    config = config.replace(models=models)
    seg_model, clip = _load_scorers(args)
    try:
        out = tune.tune_strength(
            args.manifest, config, strengths, args.out, n=args.n, seg_model=seg_model,
            clip=clip, margin=args.margin, scale=_scale(args.scale), progress=True,
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
