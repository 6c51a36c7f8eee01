"""``zodi transfer``, ``zodi preview`` and ``zodi tiny-models``: the image-transfer stage."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from zodi_cli._common import RunFailed, command, field_options, given, models_overrides, shared
from zodi_core.config import DOMAINS, TransferConfig, check_domain_name


def strength(text: str) -> float:
    """argparse type of --strength: S in (0, 1]."""
    if not 0.0 < float(text) <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a value in (0, 1], received {text}")
    return float(text)


def domain_arg(value: str) -> str:
    """argparse type of --domain: a valid domain name (built-in or user-defined)."""
    try:
        return check_domain_name(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{value!r}: {err}") from None


DOMAIN = field_options(TransferConfig, "domain", required=True, type=domain_arg)
#: TransferConfig fields the transfer options set; --prompt and the models apart.
FIELDS = (
    "negative_prompt", "strength", "batch_size", "num_inference_steps", "method", "seed",
    "device", "dtype", "compile", "channels_last", "sdpa_backend", "cudnn_benchmark", "tf32",
)  # fmt: skip


#: The transfer settings' options (TransferConfig, over --preset).
SETTINGS = {
    **shared("--preset"),
    "--prompt": {"action": "append", "help": "prompt (default: 'driving <domain phrase>, best "
                 "quality'); repeat it for several prompts: each image picks one from its seed, "
                 "recorded per row"},
    "--strength": {"type": strength, "help": "S in (0, 1] (default: the domain's)"},
    **shared("--models", "--controlnet", "--batch-size", "--steps"),
    **field_options(TransferConfig, "negative_prompt", "method", "seed"),
    **shared("--device", "--dtype"),
    # speed levers (not in the generation digest): docs/benchmarks.md
    **field_options(TransferConfig, "compile", "channels_last", "sdpa_backend", "cudnn_benchmark",
                    "tf32"),
}  # fmt: skip


def add_parsers(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    command(sub, parent, "transfer", run_transfer,
        "transfer every sample of a manifest to a target domain",
        "Transfer each source image of a samples manifest to the target domain with ControlNet "
        "+ stochastic inversion (SPEC §2). Writes <out>/images/<domain>/<digest>/<id>.png (keyed "
        "by the settings' and models' digest) and the paired manifest "
        "<out>/paired/domain=<domain>/paired.parquet, the layout the pipeline writes; a rerun "
        "skips images already written with the same settings. Exit code 1 if any image failed.",
        {
            "--manifest": {"required": True, "help": "samples manifest (local path or s3:// URI)"},
            **DOMAIN,
            "--out": {"required": True, "help": "output root (local folder or s3://bucket/prefix)"},
            "--manifest-out": "transfer manifest URI (default: "
            "<out>/paired/domain=<domain>/paired.parquet)",
            "--sample-ids": "comma-separated subset of sample ids",
            **SETTINGS,
        },
    )  # fmt: skip
    command(sub, parent, "preview", run_preview,
        "contact sheet of one image at several strengths",
        "Source | condition | one generated image per strength: choose a strength without any "
        "target image (the paper's Fig. A).",
        {
            "--image": {"required": True, "help": "source RGB image (PNG, path or URI)"},
            "--label": {"required": True, "help": "its label map (PNG)"},
            "--label-format": {"default": "label_ids", "choices": ("label_ids", "train_ids"),
                               "help": "label ids (Cityscapes gtFine labelIds) or train ids "
                               "(default: label_ids)"},
            **DOMAIN,
            "--strengths": {"default": "0.4,0.65,0.9", "help": "comma-separated strengths in (0, 1]"},
            "--out": {"required": True, "help": "output PNG"},
            # a preview sweeps the strength and makes one image at a time
            **{f: o for f, o in SETTINGS.items() if f not in ("--strength", "--batch-size")},
        },
    )  # fmt: skip
    command(sub, parent, "tiny-models", run_tiny_models,
        "write a tiny random-weight SD 1.5 + ControlNet pipeline (tests, demo)",
        "A tiny pipeline with Stable Diffusion 1.5's architecture and random weights, in "
        "diffusers' folder format (controlnet/ inside), loadable with --models DIR.",
        shared("--out", "--seed"),
    )  # fmt: skip


def build_config(args: argparse.Namespace, fields: tuple[str, ...] = FIELDS) -> Any:
    """TransferConfig from --preset, the options of ``fields`` given on the command line, --prompt
    (once or repeated) and the models."""
    prompts = [args.prompt] if isinstance(args.prompt, str) else args.prompt
    if any(not p.strip() for p in prompts or []):
        raise ValueError("--prompt: expected a non-empty prompt, received an empty string")
    if prompts is None and args.domain not in DOMAINS:
        raise ValueError(
            f"--domain {args.domain}: not a built-in domain ({', '.join(DOMAINS)}); describe it "
            f"with --prompt (e.g. --prompt 'driving at {args.domain}, best quality')"
        )
    models = models_overrides(args.models, args.controlnet)
    overrides = {"domain": args.domain, **given(args, fields), "models": models}
    if prompts:
        key, value = ("prompt", prompts[0]) if len(prompts) == 1 else ("prompts", tuple(prompts))
        overrides[key] = value
    return TransferConfig.preset(args.preset, **overrides)


def run_transfer(args: argparse.Namespace) -> dict[str, Any]:
    from zodi_core.transfer.runner import transfer_manifest

    ids = [s.strip() for s in args.sample_ids.split(",") if s.strip()] if args.sample_ids else None
    result = transfer_manifest(
        args.manifest, build_config(args), args.out, sample_ids=ids, manifest_uri=args.manifest_out
    )
    summary = result.summary()
    print(
        f"[transfer] {args.domain}: {result.written} written, {result.skipped} skipped, "
        f"{result.failed} failed → {args.out} (manifest {result.manifest_uri})"
    )
    if result.failed:
        first_id, first_err = next(iter(result.errors.items()), ("?", "?"))
        raise RunFailed(
            f"{result.failed} of {result.written + result.skipped + result.failed} images failed "
            f"(first: {first_id}: {first_err}); the failed rows are in {result.manifest_uri}; fix "
            "them and rerun the same command (written images are skipped)",
            {**summary, "errors": result.errors},
        )
    return summary


def run_preview(args: argparse.Namespace) -> dict[str, Any]:
    from zodi_core import storage
    from zodi_core.datasets.io import encode_png, read_image, read_label
    from zodi_core.device import resolve_device
    from zodi_core.transfer.models import load_components
    from zodi_core.transfer.preview import make_preview, parse_strengths
    from zodi_core.transfer.sampler import TransferSampler, validate_pair

    strengths = parse_strengths(args.strengths)
    config = build_config(args)
    for flag, uri in (("--image", args.image), ("--label", args.label)):
        if not storage.exists(uri):
            raise FileNotFoundError(f"{flag}: {uri!r} does not exist")
    image = read_image(args.image)
    label = read_label(args.label, args.label_format)
    validate_pair(image, label, "--image/--label")  # before the models load
    device, dtype = resolve_device(config.device, config.dtype)
    sampler = TransferSampler(load_components(config.models, device, dtype), config)
    sheet = make_preview(sampler, image, label, strengths, config, Path(args.image).stem)
    uri = storage.write_bytes(args.out, encode_png(sheet))
    print(f"[preview] {args.domain}: strengths {', '.join(f'{v:g}' for v in strengths)} → {uri}")
    return {"out": uri, "strengths": strengths, "width": sheet.shape[1], "height": sheet.shape[0]}


def run_tiny_models(args: argparse.Namespace) -> dict[str, Any]:
    from zodi_core.transfer.models import write_tiny_models

    out = write_tiny_models(args.out, seed=args.seed)
    print(f"[tiny-models] tiny SD 1.5 + ControlNet (random weights) → {out}; use --models {out}")
    return {"out": str(out)}
