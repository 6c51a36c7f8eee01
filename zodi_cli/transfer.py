"""``zodi transfer``, ``zodi preview`` and ``zodi tiny-models``: the image-transfer stage."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from zodi_cli._common import RunFailed, models_overrides
from zodi_core.config import DOMAINS, check_domain_name

DOMAIN_HELP = (
    f"target domain: built-in ({', '.join(DOMAINS)}) or your own name with --prompt "
    "(lowercase letters, digits, '-', '_'; e.g. dusk)"
)


def domain_arg(value: str) -> str:
    """argparse type of --domain: a valid domain name (built-in or user-defined)."""
    try:
        return check_domain_name(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{value!r}: {err}") from None


def add_parsers(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "transfer",
        parents=[parent],
        help="transfer every sample of a manifest to a target domain",
        description="Transfer each source image of a samples manifest to the target domain with "
        "ControlNet + stochastic inversion (SPEC §2). Writes <out>/images/<domain>/<digest>/<id>.png "
        "(keyed by the settings' and models' digest) and the paired manifest "
        "<out>/paired/domain=<domain>/paired.parquet, the layout the pipeline writes; a rerun "
        "skips images already written with the same settings. Exit code 1 if any image failed.",
    )
    p.add_argument("--manifest", required=True, help="samples manifest (local path or s3:// URI)")
    p.add_argument("--domain", required=True, type=domain_arg, help=DOMAIN_HELP)
    p.add_argument("--out", required=True, help="output root (local folder or s3://bucket/prefix)")
    p.add_argument(
        "--manifest-out",
        help="transfer manifest URI (default: <out>/paired/domain=<domain>/paired.parquet)",
    )
    p.add_argument("--sample-ids", help="comma-separated subset of sample ids")
    _add_common(p)
    p.set_defaults(func=run_transfer)

    p = sub.add_parser(
        "preview",
        parents=[parent],
        help="contact sheet of one image at several strengths",
        description="Source | condition | one generated image per strength: choose a strength "
        "without any target image (the paper's Fig. A).",
    )
    p.add_argument("--image", required=True, help="source RGB image (PNG, path or URI)")
    p.add_argument("--label", required=True, help="its label map (PNG)")
    p.add_argument(
        "--label-format", default="label_ids", choices=("label_ids", "train_ids"),
        help="label ids (Cityscapes gtFine labelIds) or train ids (default: label_ids)",
    )  # fmt: skip
    p.add_argument("--domain", required=True, type=domain_arg, help=DOMAIN_HELP)
    p.add_argument(
        "--strengths", default="0.4,0.65,0.9", help="comma-separated strengths in (0, 1]"
    )
    p.add_argument("--out", required=True, help="output PNG")
    _add_common(p, strength=False, batch=False)
    p.set_defaults(func=run_preview)

    p = sub.add_parser(
        "tiny-models",
        parents=[parent],
        help="write a tiny random-weight SD 1.5 + ControlNet pipeline (tests, demo)",
        description="A tiny pipeline with Stable Diffusion 1.5's architecture and random weights, "
        "in diffusers' folder format (controlnet/ inside), loadable with --models DIR.",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    p.set_defaults(func=run_tiny_models)


def _add_common(p: argparse.ArgumentParser, strength: bool = True, batch: bool = True) -> None:
    p.add_argument(
        "--preset", default="default", choices=("paper", "default", "demo"),
        help="settings preset the other options override (default: default)",
    )  # fmt: skip
    p.add_argument(
        "--prompt", action="append",
        help="prompt (default: 'driving <domain phrase>, best quality'); repeat it for several "
        "prompts: each image picks one from its seed, recorded per row",
    )  # fmt: skip
    p.add_argument(
        "--negative-prompt",
        help="CFG negative prompt (default: 'lower quality, worst quality'; '' for the pocket "
        "models, whose unconditional branch is the empty caption)",
    )
    if strength:
        p.add_argument("--strength", type=float, help="S in (0, 1] (default: the domain's)")
    p.add_argument("--models", help="base model: hub id or local folder (with controlnet/ inside)")
    p.add_argument("--controlnet", help="ControlNet: hub id or local folder")
    if batch:
        p.add_argument("--batch-size", type=int, help="images per sampler call")
    p.add_argument("--steps", type=int, help="T, DDIM steps of the full schedule")
    p.add_argument("--method", choices=("zodi", "sdedit", "inst", "wo_si"), help="ablation")
    p.add_argument("--seed", type=int, help="global seed")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--dtype", choices=("auto", "float32", "float16", "bfloat16"),
        help="weights' dtype (default: auto, float16 on CUDA, float32 on CPU)",
    )  # fmt: skip
    # speed levers (TransferConfig; not in the generation digest): docs/benchmarks.md
    bool_flag = argparse.BooleanOptionalAction
    p.add_argument("--compile", action=bool_flag, help="torch.compile UNet and ControlNet")
    p.add_argument("--channels-last", action=bool_flag, help="NHWC layout (default off)")
    p.add_argument(
        "--sdpa-backend", choices=("auto", "math", "flash", "efficient", "cudnn"),
        help="attention kernel (default auto: torch's choice)",
    )  # fmt: skip
    p.add_argument("--cudnn-benchmark", action=bool_flag, help="cuDNN autotuning (default on)")
    p.add_argument("--tf32", action=bool_flag, help="TF32 for float32 on CUDA (default on)")


def build_config(args: argparse.Namespace) -> Any:
    """TransferConfig from --preset plus the options given on the command line."""
    from zodi_core.config import TransferConfig

    overrides: dict[str, Any] = {"domain": args.domain}
    if args.prompt is not None:
        if any(not p.strip() for p in args.prompt):
            raise ValueError("--prompt: expected a non-empty prompt, received an empty string")
        if len(args.prompt) == 1:
            overrides["prompt"] = args.prompt[0]
        else:
            overrides["prompts"] = tuple(args.prompt)
    for opt, field in (
        ("negative_prompt", "negative_prompt"),
        ("strength", "strength"),
        ("batch_size", "batch_size"),
        ("steps", "num_inference_steps"),
        ("method", "method"),
        ("seed", "seed"),
        ("device", "device"),
        ("dtype", "dtype"),
        ("compile", "compile"),
        ("channels_last", "channels_last"),
        ("sdpa_backend", "sdpa_backend"),
        ("cudnn_benchmark", "cudnn_benchmark"),
        ("tf32", "tf32"),
    ):
        value = getattr(args, opt, None)
        if value is not None:
            overrides[field] = value
    if args.prompt is None and args.domain not in DOMAINS:
        raise ValueError(
            f"--domain {args.domain}: not a built-in domain ({', '.join(DOMAINS)}); describe it "
            f"with --prompt (e.g. --prompt 'driving at {args.domain}, best quality')"
        )
    if getattr(args, "strength", None) is not None and not 0.0 < args.strength <= 1.0:
        raise ValueError(f"--strength: expected a value in (0, 1], received {args.strength}")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps: expected an integer >= 1, received {args.steps}")
    if getattr(args, "batch_size", None) is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size: expected an integer >= 1, received {args.batch_size}")
    config = TransferConfig.preset(args.preset, **overrides)
    models = {**config.models.model_dump(), **models_overrides(args.models, args.controlnet)}
    return config.replace(models=models)


def run_transfer(args: argparse.Namespace) -> dict[str, Any]:
    from zodi_core.transfer.runner import transfer_manifest

    config = build_config(args)
    ids = None
    if args.sample_ids:
        ids = [s.strip() for s in args.sample_ids.split(",") if s.strip()]
    result = transfer_manifest(
        args.manifest, config, args.out, sample_ids=ids, manifest_uri=args.manifest_out
    )
    summary = result.summary()
    print(
        f"[transfer] {args.domain}: {result.written} written, {result.skipped} skipped, "
        f"{result.failed} failed → {args.out} (manifest {result.manifest_uri})"
    )
    if result.failed:
        summary["errors"] = result.errors
        first_id, first_err = next(iter(result.errors.items()), ("?", "?"))
        total = result.written + result.skipped + result.failed
        raise RunFailed(
            f"{result.failed} of {total} images failed (first: {first_id}: {first_err}); "
            f"the failed rows are in {result.manifest_uri}; fix them and rerun the same command "
            "(written images are skipped)",
            summary,
        )
    return summary


def run_preview(args: argparse.Namespace) -> dict[str, Any]:
    from zodi_core import storage
    from zodi_core.datasets.io import encode_png, read_image, read_label
    from zodi_core.device import resolve_device
    from zodi_core.transfer.models import load_components
    from zodi_core.transfer.preview import make_preview, parse_strengths
    from zodi_core.transfer.sampler import TransferSampler

    strengths = parse_strengths(args.strengths)
    config = build_config(args)
    if not storage.exists(args.image):
        raise FileNotFoundError(f"--image: {args.image!r} does not exist")
    if not storage.exists(args.label):
        raise FileNotFoundError(f"--label: {args.label!r} does not exist")
    image = read_image(args.image)
    label = read_label(args.label, args.label_format)
    if label.shape != image.shape[:2]:
        raise ValueError(
            f"--label: size {label.shape[1]}x{label.shape[0]} differs from --image size "
            f"{image.shape[1]}x{image.shape[0]}"
        )
    device, dtype = resolve_device(config.device, config.dtype)
    sampler = TransferSampler(load_components(config.models, device, dtype), config)
    sample_id = Path(args.image).stem
    sheet = make_preview(sampler, image, label, strengths, config, sample_id)
    uri = storage.write_bytes(args.out, encode_png(sheet))
    print(f"[preview] {args.domain}: strengths {', '.join(f'{v:g}' for v in strengths)} → {uri}")
    return {"out": uri, "strengths": strengths, "width": sheet.shape[1], "height": sheet.shape[0]}


def run_tiny_models(args: argparse.Namespace) -> dict[str, Any]:
    from zodi_core.transfer.models import write_tiny_models

    out = write_tiny_models(args.out, seed=args.seed)
    print(f"[tiny-models] tiny SD 1.5 + ControlNet (random weights) → {out}; use --models {out}")
    return {"out": str(out)}
