"""``zodi train``, ``zodi evaluate`` and ``zodi predict``: adaptation, evaluation, inference."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from zodi_cli._common import CLIError, command, count, field_options, given, shared
from zodi_core.config import EvalConfig, TrainConfig

#: Options of both train and evaluate that set a config field of the same name.
DEVICE_FIELDS = ("batch_size", "device", "dtype")
DTYPE = shared("--dtype", help="float16/bfloat16: mixed precision on CUDA (default: float32)")


def add_parsers(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    command(sub, parent, "train", run_train,
        "adapt a segmentation model (mmengine Runner) on a paired manifest",
        "Train any mmseg segmentor config with ZoDi added in code (the ZoDiSegmentor wrapper, the "
        "paired manifest as training set, the paired pipeline derived from the config's own), or "
        "the source-only baseline; checkpoints and logs go to the work dir (local or s3://). "
        "Prints one progress line, then the final losses and checkpoint. The same command on a "
        "work dir with checkpoints of the same settings resumes from the last one; checkpoints "
        "of other settings are refused (--resume, --no-resume).",
        {
            "--config": {"required": True, "dest": "mmseg_config", "metavar": "CONFIG",
                         "help": "mmseg config: a file, a bundled name (zodi_core/seg/configs) "
                         "or a model-zoo name (mmseg::pspnet/<file>.py)"},
            "--paired-manifest": "transfer manifest of source/generated pairs",
            "--source-manifest": "samples manifest of the source images (optional)",
            "--val-manifest": "samples manifest validated on after training",
            "--work-dir": {"required": True, "help": "folder or s3://bucket/prefix"},
            "--source-only": {"action": "store_true", "help": "train the baseline: the config as "
                              "is, on source images, no ZoDi"},
            **shared("--preset"),
            **field_options(TrainConfig, "scheme", "lambda_sim", "feature_stage"),
            **shared("--batch-size", help="images (pairs) per GPU and step"),
            "--seed": {"type": int, "default": 0, "help": "training seed (default 0)"},
            **field_options(TrainConfig, "max_iters", "pretrained"),
            "--gpus": {"type": count, "help": "data-parallel processes (torchrun + DDP; on a "
                       "CPU-only machine: CPU processes with gloo); needs --scheme concat"},
            **shared("--device"),
            **DTYPE,
            "--vis-backend": {"action": "append", "dest": "vis_backends", "help": "mmengine "
                              "visualisation backend of the training scalars (repeat; default: "
                              "local)", "choices": ("local", "tensorboard", "mlflow")},
            "--cfg-options": {"nargs": "+", "type": cfg_option, "metavar": "KEY=VALUE", "help": "set config keys as "
                              "mmengine does (new keys are added, e.g. "
                              "model.backbone.init_cfg=None; one close to an existing key warns)"},
            "--resume": {"action": argparse.BooleanOptionalAction, "default": "auto", "help":
                         "continue from the last checkpoint even if it was trained with other "
                         "settings; --no-resume: start over in the work dir, ignoring its "
                         "checkpoints (default: continue only a checkpoint of the same settings, "
                         "refuse other ones)"},
            # set by --gpus for the torchrun processes
            "--launcher": {"default": "none", "choices": ("none", "pytorch"),
                           "help": argparse.SUPPRESS},
            "--summary-file": {"help": argparse.SUPPRESS},
        },
    )  # fmt: skip
    command(sub, parent, "evaluate", run_evaluate,
        "mIoU / per-class IoU / aAcc of checkpoints on target manifests",
        "Evaluate at 512x1024 over the 19 Cityscapes classes; prints a mIoU table and writes "
        "report.json, report.md and a confusion-matrix PNG per target to --out.",
        {
            "--checkpoint": "checkpoint URI",
            "--seeds": "comma-separated final checkpoints of several seeds",
            "--best-checkpoint": "a best checkpoint, reported separately",
            "--config": {"required": True, "help": "the mmseg config the model was trained with"},
            "--manifest": {"action": "append", "help": "samples manifest of a target (repeat)"},
            "--proxy-manifest": "transfer manifest of generated source-val images",
            "--out": {"required": True, "help": "output folder or s3://bucket/prefix"},
            **shared("--preset", help="EvalConfig preset (demo: 64x128)"),
            **field_options(EvalConfig, "height", "width"),
            **shared("--batch-size", help="images per forward pass"),
            **shared("--device"),
            **DTYPE,
        },
    )  # fmt: skip
    command(sub, parent, "predict", run_predict,
        "run an adapted model on images: label maps (train ids) and colour overlays",
        "Predict every image of a folder (PNG/JPEG) or manifest; writes labels/<id>.png "
        "(Cityscapes train ids) and overlays/<id>.png under --out.",
        {
            "--config": {"required": True, "help": "the mmseg config the model was trained with"},
            "--checkpoint": {"required": True, "help": "checkpoint URI"},
            "--input": {"required": True, "help": "folder of images, or a manifest (.parquet)"},
            "--out": {"required": True, "help": "output folder or s3://bucket/prefix"},
            "--height": {"type": int, "help": "height the model sees (default: the image's)"},
            "--width": {"type": int, "help": "width the model sees (default: the image's)"},
            **shared("--device"),
        },
    )  # fmt: skip


def cfg_option(item: str) -> tuple[str, Any]:
    """argparse type of --cfg-options: ``KEY=VALUE``, the value parsed as mmengine's own
    ``--cfg-options`` (lists, tuples, numbers, None)."""
    from mmengine.config import DictAction

    key, sep, value = item.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, received {item!r}")
    return key, DictAction._parse_iterable(value)


def _check_cfg_options(args: argparse.Namespace, tc) -> None:
    """``--cfg-options`` merged as mmengine does: a new key close to an existing one warns; the
    result is built without weights, so a key the model does not take fails now (exit 2)."""
    from zodi_core.preflight import check_seg_config
    from zodi_core.seg.train import load_config, option_notes

    overrides = dict(args.cfg_options or ())
    with warnings.catch_warnings(action="ignore"):
        for note in option_notes(load_config(tc.mmseg_config), overrides):
            print(f"zodi train: warning: --cfg-options {note}", file=sys.stderr)
        problems = check_seg_config(
            tc, "--config", overrides=overrides, source_only=args.source_only,
            max_iters=args.max_iters,
        )  # fmt: skip
    if problems:
        raise CLIError(
            f"--config/--cfg-options: {len(problems)} problem(s):\n" + "\n".join(problems)
        )


def _launch_ddp(args: argparse.Namespace) -> dict[str, Any]:
    """``--gpus N``: this command line (without --json) in N processes under torchrun (DDP),
    holding the work dir's lock for them; rank 0 writes the summary."""
    from zodi_core.seg.worklock import work_dir_lock

    with tempfile.TemporaryDirectory(prefix="zodi-ddp-") as tmp:
        summary_file = Path(tmp) / "summary.json"
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={args.gpus}", "-m", "zodi_cli",
            *(a for a in args.argv if a != "--json"),
            "--launcher", "pytorch", "--summary-file", str(summary_file),
        ]  # fmt: skip
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        with work_dir_lock(args.work_dir):
            code = subprocess.call(cmd, env=env)
        if code != 0 or not summary_file.is_file():
            raise RuntimeError(f"--gpus {args.gpus}: a training process failed (exit code {code})")
        return json.loads(summary_file.read_text())


def run_train(args: argparse.Namespace) -> dict[str, Any]:
    fields = ("mmseg_config", "scheme", "lambda_sim", "feature_stage", "vis_backends")
    quiet = {} if args.verbose else {"log_level": "ERROR"}  # the progress line, not mmengine's
    tc = TrainConfig.preset(args.preset, **given(args, (*fields, *DEVICE_FIELDS)), **quiet)
    if args.cfg_options and args.launcher == "none":
        _check_cfg_options(args, tc)
    if args.gpus and args.gpus > 1 and args.launcher == "none":
        if tc.scheme != "concat" and not args.source_only:
            raise CLIError(
                f"--gpus {args.gpus}: the {tc.scheme!r} scheme cannot run under DDP (mmengine's "
                f"DDP wrapper runs forward(mode='loss'), the concat scheme); add --scheme concat"
            )
        summary = _launch_ddp(args)
    else:
        from zodi_core.seg.train import train_model

        with warnings.catch_warnings(action=None if args.verbose else "ignore"):
            summary = train_model(
                tc.mmseg_config, args.paired_manifest, args.work_dir, seed=args.seed,
                resume=args.resume, overrides=dict(args.cfg_options or ()),
                source_manifest_uri=args.source_manifest, val_manifest_uri=args.val_manifest,
                max_iters=args.max_iters, train_config=tc, pretrained=args.pretrained,
                source_only=args.source_only, launcher=args.launcher,
                progress=not args.verbose, lock=args.launcher == "none",
            )  # fmt: skip
        if args.launcher == "pytorch":
            if int(os.environ.get("RANK", "0")) == 0 and args.summary_file:
                Path(args.summary_file).write_text(json.dumps(summary, default=str))
            return {}
    if not args.json:
        from zodi_core.seg.hooks import format_losses

        done = f"{summary['iterations']} iterations" if summary.get("losses") else "already trained"
        print(f"trained: {done} in {summary['seconds']:.1f} s ({summary['mmseg_config']})")
        if losses := format_losses(summary.get("losses", {})):
            print(f"final losses: {losses}")
        print(f"checkpoint: {summary['checkpoint']}")
    return summary


def run_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from zodi_core.evaluation import evaluate_checkpoint, format_miou_table

    seeds = [c for c in (args.seeds or "").split(",") if c]
    if bool(seeds) == bool(args.checkpoint):
        raise CLIError(
            "give either --checkpoint URI or --seeds CKPT,CKPT,... (one final checkpoint per "
            "seed), not both (use --best-checkpoint for a best one)"
        )
    eval_config = EvalConfig.preset(args.preset, **given(args, (*DEVICE_FIELDS, "height", "width")))
    with warnings.catch_warnings(action=None if args.verbose else "ignore"):
        result = evaluate_checkpoint(
            seeds or args.checkpoint, args.config, args.manifest or [], args.out,
            proxy_manifest=args.proxy_manifest, best_checkpoint=args.best_checkpoint,
            eval_config=eval_config,
        )  # fmt: skip
    if not args.json:
        print(format_miou_table(result["metrics"]))
        print(f"report: {result['report_md']}")
    return result


def run_predict(args: argparse.Namespace) -> dict[str, Any]:
    from zodi_core.seg.predict import predict_images

    if bool(args.height) != bool(args.width):
        raise CLIError("--height and --width: give both (the size the model sees) or neither")
    scale = (args.width, args.height) if args.height else None
    with warnings.catch_warnings(action=None if args.verbose else "ignore"):
        result = predict_images(
            args.config, args.checkpoint, args.input, args.out,
            device=args.device or "auto", scale=scale, progress=not args.json,
        )  # fmt: skip
    if not args.json:
        print(f"predicted {result['images']} images: labels {result['labels']}, "
              f"overlays {result['overlays']}")  # fmt: skip
    return result
