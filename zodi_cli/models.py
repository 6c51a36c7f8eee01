"""``zodi models download``: every model a run needs, in one folder, for workers without internet."""

from __future__ import annotations

import argparse
from typing import Any

from zodi_cli._common import command
from zodi_core.config import CONTROLNET_SEG_ID, SD15_MODEL_ID


def add_parsers(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    group = sub.add_parser(
        "models", parents=[parent], description="Model folders for machines without internet.",
        help="fetch the models into one folder (for workers without internet)",
    )  # fmt: skip
    actions = group.add_subparsers(
        dest="models_command", metavar="ACTION", help="download: fetch the models into a folder"
    )
    actions.required = True
    command(actions, parent, "download", run_download,
        "fetch SD 1.5, the segmentation ControlNet and the backbone weights into --out",
        "On a machine with internet: fetch Stable Diffusion 1.5 (unet, vae, text_encoder, "
        "tokenizer, scheduler), the segmentation ControlNet (into OUT/controlnet) and the "
        "ImageNet backbone weights of the mmseg config (into OUT/torch/hub/checkpoints) into one "
        "folder. Copy it to the workers and pass --models OUT (its controlnet/ is used; training: "
        "TORCH_HOME=OUT/torch). Only the files the loader needs come down, in one weights "
        "variant, at the commit the hub names for the revision. A rerun fetches only what is "
        "missing or changed (huggingface_hub's own bookkeeping); with the hub out of reach, a "
        "folder an earlier run filled is kept.",
        {
            "--out": {"required": True, "help": "folder to fill (created when missing)"},
            "--base": {"default": SD15_MODEL_ID,
                       "help": f"Stable Diffusion hub id (default: {SD15_MODEL_ID})"},
            "--controlnet": {"default": CONTROLNET_SEG_ID,
                             "help": f"segmentation ControlNet hub id (default: {CONTROLNET_SEG_ID})"},
            "--revision": "hub revision (branch, tag or commit) of the base model (default: main); "
            "the folder records the commit it named",
            "--controlnet-revision": "hub revision of the ControlNet (default: main; as --revision)",
            "--variant": {"choices": ("fp16", "fp32"), "default": "fp16",
                          "help": "weights variant (default: fp16, half the download, loads in any "
                          "dtype; a component without an fp16 file comes in its standard weights)"},
            "--mmseg-config": {"action": "append", "metavar": "CONFIG",
                               "help": "mmseg config whose ImageNet backbone weights to fetch: a "
                               "path, a name under zodi_core/seg/configs or mmseg::<folder>/"
                               "<file>.py; repeat for several (default: TrainConfig's mmseg_config)"},
            "--no-backbone": {"action": "store_true",
                              "help": "fetch no backbone weights (diffusion only)"},
        },
    )  # fmt: skip


def run_download(args: argparse.Namespace) -> dict[str, Any]:
    from zodi_core.config import ModelsConfig
    from zodi_core.hub import download_models, format_size

    models = ModelsConfig(
        base=args.base, controlnet=args.controlnet, revision=args.revision,
        controlnet_revision=args.controlnet_revision,
    )  # fmt: skip
    configs = () if args.no_backbone else (tuple(args.mmseg_config) if args.mmseg_config else None)
    # An unreachable hub raises HubUnreachableError: one line, exit 1 (the work failed; it may pass).
    result = download_models(
        args.out, models, configs, variant=args.variant,
        say=lambda line: print(f"[models] {line}", flush=True),
    )  # fmt: skip
    print(f"[models] done: {format_size(result.total_size)} in {result.out}")
    for f in result.fetched:
        source = f.source if f.name == "backbone" else f"{f.source}@{f.revision[:12]}"
        n, state = len(f.files), ("already there" if f.skipped else "fetched")
        print(
            f"  {f.name:<10} {source}: {n} file{'s' if n != 1 else ''}, {format_size(f.size)} "
            f"({state}) → {f.path}"
        )
    print("[models] next, on a worker without internet (after copying the folder):")
    print("\n".join(f"  {line}" for line in result.usage()))
    return result.summary()
