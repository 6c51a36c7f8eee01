"""``zodi train`` and ``zodi evaluate``: model adaptation and evaluation on MMSegmentation."""

from __future__ import annotations

import argparse
from typing import Any

from zodi_cli._common import CLIError


def _parse_cfg_options(items: list[str] | None) -> dict[str, Any]:
    """``key=value`` pairs parsed as mmengine's ``--cfg-options`` (lists, tuples, numbers, None)."""
    from mmengine.config import DictAction

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CLIError(f"--cfg-options: expected KEY=VALUE, received {item!r}")
        out[key] = DictAction._parse_iterable(value)
    return out


def run_train(args: argparse.Namespace) -> dict[str, Any]:
    from zodi_core.seg.train import train_model

    return train_model(
        args.config,
        args.paired_manifest,
        args.work_dir,
        seed=args.seed,
        resume=args.resume,
        overrides=_parse_cfg_options(args.cfg_options),
        source_manifest_uri=args.source_manifest,
        val_manifest_uri=args.val_manifest,
        max_iters=args.max_iters,
        pretrained=args.pretrained,
    )


def run_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from zodi_core.config import EvalConfig
    from zodi_core.evaluation import evaluate_checkpoint

    seeds = [c for c in (args.seeds or "").split(",") if c]
    if not seeds and not args.checkpoint:
        raise CLIError(
            "give --checkpoint URI, or --seeds CKPT,CKPT,... (one final checkpoint per seed)"
        )
    if seeds and args.checkpoint:
        raise CLIError(
            "give either --checkpoint or --seeds, not both (use --best-checkpoint for a best one)"
        )
    eval_config = EvalConfig.preset(
        args.preset, **({"batch_size": args.batch_size} if args.batch_size else {})
    )
    if args.height or args.width:
        eval_config = eval_config.replace(
            height=args.height or eval_config.height, width=args.width or eval_config.width
        )
    return evaluate_checkpoint(
        seeds or args.checkpoint,
        args.config,
        args.manifest or [],
        args.out,
        proxy_manifest=args.proxy_manifest,
        best_checkpoint=args.best_checkpoint,
        eval_config=eval_config,
        device=args.device,
    )


def add_parsers(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "train",
        parents=[parent],
        help="adapt a segmentation model (mmengine Runner) on a paired manifest",
        description="Train an mmseg config (a path, or a name under zodi_core/seg/configs) on the "
        "pairs of a transfer manifest; checkpoints and logs go to the work dir (local or s3://).",
    )
    p.add_argument("--config", required=True, help="mmseg config file or bundled config name")
    p.add_argument("--paired-manifest", help="transfer manifest of source/generated pairs")
    p.add_argument("--source-manifest", help="samples manifest of the source images (optional)")
    p.add_argument("--val-manifest", help="samples manifest validated on after training")
    p.add_argument("--work-dir", required=True, help="folder or s3://bucket/prefix")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--max-iters", type=int, help="iteration budget instead of the config's epochs")
    p.add_argument("--pretrained", help="local ImageNet weights of the backbone")
    p.add_argument(
        "--cfg-options", nargs="+", metavar="KEY=VALUE", help="override existing config keys"
    )
    p.set_defaults(func=run_train)

    e = subparsers.add_parser(
        "evaluate",
        parents=[parent],
        help="mIoU / per-class IoU / aAcc of checkpoints on target manifests",
        description="Evaluate at 512x1024 over the 19 Cityscapes classes; writes report.json, "
        "report.md and a confusion-matrix PNG per target to --out.",
    )
    e.add_argument("--checkpoint", help="checkpoint URI")
    e.add_argument("--seeds", help="comma-separated final checkpoints of several seeds")
    e.add_argument("--best-checkpoint", help="a best checkpoint, reported separately")
    e.add_argument("--config", required=True, help="the mmseg config the model was trained with")
    e.add_argument("--manifest", action="append", help="samples manifest of a target (repeat)")
    e.add_argument("--proxy-manifest", help="transfer manifest of generated source-val images")
    e.add_argument("--out", required=True, help="output folder or s3://bucket/prefix")
    e.add_argument("--preset", default="default", choices=("paper", "default", "demo"),
                   help="EvalConfig preset (demo: 64x128)")  # fmt: skip
    e.add_argument("--height", type=int, help="override the evaluation height")
    e.add_argument("--width", type=int, help="override the evaluation width")
    e.add_argument("--batch-size", type=int, help="images per forward pass")
    e.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when available)")
    e.set_defaults(func=run_evaluate)
