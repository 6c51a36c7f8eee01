"""``zodi train``, ``zodi evaluate`` and ``zodi predict``: adaptation, evaluation, inference."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from zodi_cli._common import CLIError

PRESETS = ("paper", "default", "demo")


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


def _train_config(args: argparse.Namespace):
    """The TrainConfig of this command: the preset, the command's options, the config file."""
    from zodi_core.config import TrainConfig

    options = {
        "mmseg_config": args.config,
        "scheme": args.scheme,
        "lambda_sim": args.lambda_sim,
        "feature_stage": args.feature_stage,
        "batch_size": args.batch_size,
        "device": args.device,
        "dtype": args.dtype,
        "vis_backends": tuple(args.vis_backend) if args.vis_backend else None,
        # The compact progress line replaces mmengine's console log unless --verbose.
        "log_level": None if args.verbose else "ERROR",
    }
    return TrainConfig.preset(args.preset, **{k: v for k, v in options.items() if v is not None})


@contextlib.contextmanager
def _quiet(args: argparse.Namespace):
    """Library warnings (mmseg's deprecation notices) only with --verbose: the summary stays short."""
    if args.verbose:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _print_train_summary(summary: dict[str, Any]) -> None:
    from zodi_core.seg.hooks import format_losses

    losses = format_losses(summary.get("losses", {}))
    done = "already trained" if not summary.get("losses") else f"{summary['iterations']} iterations"
    print(f"trained: {done} in {summary['seconds']:.1f} s ({summary['mmseg_config']})")
    if losses:
        print(f"final losses: {losses}")
    print(f"checkpoint: {summary['checkpoint']}")


def _launch_ddp(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """``--gpus N``: N processes under torchrun (DDP), holding the work dir's lock for them."""
    from zodi_core.seg.worklock import work_dir_lock

    with tempfile.TemporaryDirectory(prefix="zodi-ddp-") as tmp:
        summary_file = Path(tmp) / "summary.json"
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={args.gpus}", "-m", "zodi_cli", *argv,
            "--launcher", "pytorch", "--summary-file", str(summary_file),
        ]  # fmt: skip
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        with work_dir_lock(args.work_dir):
            code = subprocess.call(cmd, env=env)
        if code != 0 or not summary_file.is_file():
            raise RuntimeError(f"--gpus {args.gpus}: a training process failed (exit code {code})")
        return json.loads(summary_file.read_text())


def _check_cfg_options(args: argparse.Namespace, tc) -> None:
    """``--cfg-options`` merged as mmengine does: a new key close to an existing one is printed
    as a warning ("did you mean"); the result is built without weights (pipelines, model), so a
    key the model does not take fails now, in one line per problem (exit 2)."""
    from zodi_core.preflight import check_seg_config
    from zodi_core.seg.train import load_config, option_notes

    overrides = _parse_cfg_options(args.cfg_options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
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


def run_train(args: argparse.Namespace) -> dict[str, Any]:
    tc = _train_config(args)
    if args.cfg_options and args.launcher == "none":
        _check_cfg_options(args, tc)
    if args.gpus is not None and args.gpus < 1:
        raise CLIError(f"--gpus: expected an integer >= 1, received {args.gpus}")
    if args.gpus and args.gpus > 1 and args.launcher == "none":
        if tc.scheme != "concat" and not args.source_only:
            raise CLIError(
                f"--gpus {args.gpus}: the {tc.scheme!r} scheme cannot run under DDP (mmengine's "
                f"DDP wrapper runs forward(mode='loss'), the concat scheme); add --scheme concat"
            )
        summary = _launch_ddp(args, _child_argv(args))
    else:
        with _quiet(args):
            summary = _train(args, tc)
        if args.launcher == "pytorch":
            if int(os.environ.get("RANK", "0")) == 0 and args.summary_file:
                Path(args.summary_file).write_text(json.dumps(summary, default=str))
            return {}
    if not args.json:
        _print_train_summary(summary)
    return summary


def _train(args: argparse.Namespace, tc) -> dict[str, Any]:
    from zodi_core.seg.train import train_model

    return train_model(
        tc.mmseg_config,
        args.paired_manifest,
        args.work_dir,
        seed=args.seed,
        resume=args.resume,
        overrides=_parse_cfg_options(args.cfg_options),
        source_manifest_uri=args.source_manifest,
        val_manifest_uri=args.val_manifest,
        max_iters=args.max_iters,
        train_config=tc,
        pretrained=args.pretrained,
        source_only=args.source_only,
        launcher=args.launcher,
        progress=not args.verbose,
        lock=args.launcher == "none",
    )


def _child_argv(args: argparse.Namespace) -> list[str]:
    """This ``zodi train`` command for one torchrun process (without --gpus and --json)."""
    argv = ["train"]
    for flag in (
        "config", "paired_manifest", "source_manifest", "val_manifest", "work_dir", "preset",
        "scheme", "lambda_sim", "feature_stage", "batch_size", "seed", "max_iters", "pretrained",
        "device", "dtype",
    ):  # fmt: skip
        value = getattr(args, flag)
        if value is not None:
            argv += [f"--{flag.replace('_', '-')}", str(value)]
    for backend in args.vis_backend or []:
        argv += ["--vis-backend", backend]
    for flag in ("source_only", "verbose"):
        if getattr(args, flag, False):
            argv.append(f"--{flag.replace('_', '-')}")
    if isinstance(args.resume, bool):  # else "auto", the default
        argv.append("--resume" if args.resume else "--no-resume")
    if args.cfg_options:
        argv += ["--cfg-options", *args.cfg_options]
    return argv


def run_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from zodi_core.config import EvalConfig
    from zodi_core.evaluation import format_miou_table

    seeds = [c for c in (args.seeds or "").split(",") if c]
    if not seeds and not args.checkpoint:
        raise CLIError(
            "give --checkpoint URI, or --seeds CKPT,CKPT,... (one final checkpoint per seed)"
        )
    if seeds and args.checkpoint:
        raise CLIError(
            "give either --checkpoint or --seeds, not both (use --best-checkpoint for a best one)"
        )
    options = {"batch_size": args.batch_size, "device": args.device, "dtype": args.dtype}
    eval_config = EvalConfig.preset(
        args.preset, **{k: v for k, v in options.items() if v is not None}
    )
    if args.height or args.width:
        eval_config = eval_config.replace(
            height=args.height or eval_config.height, width=args.width or eval_config.width
        )
    with _quiet(args):
        result = _evaluate(args, seeds, eval_config)
    if not args.json:
        print(format_miou_table(result["metrics"]))
        print(f"report: {result['report_md']}")
    return result


def _evaluate(args: argparse.Namespace, seeds: list[str], eval_config) -> dict[str, Any]:
    from zodi_core.evaluation import evaluate_checkpoint

    return evaluate_checkpoint(
        seeds or args.checkpoint,
        args.config,
        args.manifest or [],
        args.out,
        proxy_manifest=args.proxy_manifest,
        best_checkpoint=args.best_checkpoint,
        eval_config=eval_config,
    )


def run_predict(args: argparse.Namespace) -> dict[str, Any]:
    from zodi_core.seg.predict import predict_images

    scale = None
    if args.height or args.width:
        if not (args.height and args.width):
            raise CLIError("--height and --width: give both (the size the model sees) or neither")
        scale = (args.width, args.height)
    with _quiet(args):
        result = predict_images(
            args.config, args.checkpoint, args.input, args.out,
            device=args.device or "auto", scale=scale, progress=not args.json,
        )  # fmt: skip
    if not args.json:
        print(f"predicted {result['images']} images: labels {result['labels']}, "
              f"overlays {result['overlays']}")  # fmt: skip
    return result


def _device_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help="auto (default: CUDA when available), cpu, cuda, cuda:N")
    p.add_argument("--dtype", choices=("auto", "float32", "float16", "bfloat16"),
                   help="float16/bfloat16: mixed precision on CUDA (default: float32)")  # fmt: skip


def add_parsers(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "train",
        parents=[parent],
        help="adapt a segmentation model (mmengine Runner) on a paired manifest",
        description="Train any mmseg segmentor config with ZoDi added in code (the ZoDiSegmentor "
        "wrapper, the paired manifest as training set, the paired pipeline derived from the "
        "config's own), or the source-only baseline; checkpoints and logs go to the work dir "
        "(local or s3://). Prints one progress line, then the final losses and checkpoint. "
        "The same command on a work dir with checkpoints of the same settings resumes from the "
        "last one; checkpoints of other settings are refused (--resume, --no-resume).",
    )
    p.add_argument("--config", required=True, help="mmseg config: a file, a bundled name "
                   "(zodi_core/seg/configs) or a model-zoo name (mmseg::pspnet/<file>.py)")  # fmt: skip
    p.add_argument("--paired-manifest", help="transfer manifest of source/generated pairs")
    p.add_argument("--source-manifest", help="samples manifest of the source images (optional)")
    p.add_argument("--val-manifest", help="samples manifest validated on after training")
    p.add_argument("--work-dir", required=True, help="folder or s3://bucket/prefix")
    p.add_argument("--source-only", action="store_true",
                   help="train the baseline: the config as is, on source images, no ZoDi")  # fmt: skip
    p.add_argument("--preset", default="default", choices=PRESETS,
                   help="TrainConfig preset the options below override (default: default)")  # fmt: skip
    p.add_argument("--scheme", choices=("release", "concat"),
                   help="ZoDi training scheme (default release; concat under --gpus)")  # fmt: skip
    p.add_argument("--lambda-sim", type=float, help="weight λ of the similarity loss (0.1)")
    p.add_argument("--feature-stage", type=int, help="backbone stage of L_sim (default -1: last)")
    p.add_argument("--batch-size", type=int, help="images (pairs) per GPU and step")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    resume = p.add_mutually_exclusive_group()
    resume.add_argument(
        "--resume", dest="resume", action="store_const", const=True, default="auto",
        help="continue from the last checkpoint even if it was trained with other settings "
        "(default: continue only a checkpoint of the same settings, refuse other ones)",
    )  # fmt: skip
    resume.add_argument(
        "--no-resume", dest="resume", action="store_const", const=False,
        help="start over in the work dir, ignoring its checkpoints",
    )  # fmt: skip
    p.add_argument("--max-iters", type=int, help="iteration budget instead of the config's epochs")
    p.add_argument("--pretrained", help="local ImageNet weights of the backbone")
    p.add_argument("--gpus", type=int, help="data-parallel processes (torchrun + DDP; on a "
                   "CPU-only machine: CPU processes with gloo); needs --scheme concat")  # fmt: skip
    _device_options(p)
    p.add_argument("--vis-backend", action="append", choices=("local", "tensorboard", "mlflow"),
                   help="mmengine visualisation backend of the training scalars (repeat; "
                   "default: local)")  # fmt: skip
    p.add_argument(
        "--cfg-options", nargs="+", metavar="KEY=VALUE",
        help="set config keys as mmengine does (new keys are added, e.g. "
        "model.backbone.init_cfg=None; one close to an existing key warns)",
    )  # fmt: skip
    p.add_argument("--launcher", default="none", choices=("none", "pytorch"),
                   help=argparse.SUPPRESS)  # set by --gpus for the torchrun processes  # fmt: skip
    p.add_argument("--summary-file", help=argparse.SUPPRESS)
    p.set_defaults(func=run_train)

    e = subparsers.add_parser(
        "evaluate",
        parents=[parent],
        help="mIoU / per-class IoU / aAcc of checkpoints on target manifests",
        description="Evaluate at 512x1024 over the 19 Cityscapes classes; prints a mIoU table and "
        "writes report.json, report.md and a confusion-matrix PNG per target to --out.",
    )
    e.add_argument("--checkpoint", help="checkpoint URI")
    e.add_argument("--seeds", help="comma-separated final checkpoints of several seeds")
    e.add_argument("--best-checkpoint", help="a best checkpoint, reported separately")
    e.add_argument("--config", required=True, help="the mmseg config the model was trained with")
    e.add_argument("--manifest", action="append", help="samples manifest of a target (repeat)")
    e.add_argument("--proxy-manifest", help="transfer manifest of generated source-val images")
    e.add_argument("--out", required=True, help="output folder or s3://bucket/prefix")
    e.add_argument("--preset", default="default", choices=PRESETS,
                   help="EvalConfig preset (demo: 64x128)")  # fmt: skip
    e.add_argument("--height", type=int, help="override the evaluation height")
    e.add_argument("--width", type=int, help="override the evaluation width")
    e.add_argument("--batch-size", type=int, help="images per forward pass")
    _device_options(e)
    e.set_defaults(func=run_evaluate)

    r = subparsers.add_parser(
        "predict",
        parents=[parent],
        help="run an adapted model on images: label maps (train ids) and colour overlays",
        description="Predict every image of a folder (PNG/JPEG) or manifest; writes "
        "labels/<id>.png (Cityscapes train ids) and overlays/<id>.png under --out.",
    )
    r.add_argument("--config", required=True, help="the mmseg config the model was trained with")
    r.add_argument("--checkpoint", required=True, help="checkpoint URI")
    r.add_argument("--input", required=True, help="folder of images, or a manifest (.parquet)")
    r.add_argument("--out", required=True, help="output folder or s3://bucket/prefix")
    r.add_argument("--height", type=int, help="height the model sees (default: the image's)")
    r.add_argument("--width", type=int, help="width the model sees (default: the image's)")
    r.add_argument("--device", help="auto (default: CUDA when available), cpu, cuda, cuda:N")
    r.set_defaults(func=run_predict)
