"""``zodi pocket-models``: train the project's small diffusion models on its synthetic world."""

from __future__ import annotations

import argparse
from typing import Any

from zodi_cli._common import command


def add_parsers(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    command(sub, parent, "pocket-models", run_pocket_models,
        "train small SD 1.5-style diffusion models + ControlNet on the synthetic world",
        "Write a captioned synthetic web corpus (disjoint from the source and target sets), train "
        "a VAE, a text-conditioned UNet and a segmentation ControlNet on it with Stable Diffusion's "
        "recipe, and save them in diffusers' folder format (controlnet/ inside), loadable with "
        "--models DIR. Resumes an interrupted run from its checkpoints; prints measured quality "
        "and writes MODEL_CARD.md. The full preset takes about an hour on a 2-core CPU.",
        {
            "--out": {"required": True, "help": "output folder (created; resumed if it exists)"},
            "--preset": {"default": "full",  # the names: zodi_core.pocket.train.PRESETS
                         "help": "full: the committed models (16x32 latents, ControlNet caption "
                         "dropout 0.3, 43-57 min on 2 cores); v11: full with dropout 0.1, v7: "
                         "full with ControlNet's dropout 0.5 (both committed before); v5: v7 "
                         "without offset noise and EMA; "
                         "v3, v4: v5 with shorter phases; v6short: v4 with other lengths; v1: "
                         "8x16 latents; v2: v3 with a shorter UNet; v8, v9: v7 with a cosine "
                         "ControlNet learning rate, with Cityscapes-palette maps; v10: v7 1.5x "
                         "wide (trials); smoke: seconds (tests)"},
            "--seed": {"type": int, "help": "training seed (default: the preset's, 0)"},
            "--threads": {"type": int, "help": "torch CPU threads (default: torch's choice)"},
            "--device": {"default": "cpu", "help": "train on cpu or cuda[:N] (measured on CPU)"},
            "--no-measure": {"action": "store_true", "help": "skip the quality measurements"},
            "--keep-checkpoints": {"action": "store_true", "help": "keep checkpoints/ "
                                   "(resumption state) after a finished training"},
        },
    )  # fmt: skip


def run_pocket_models(args: argparse.Namespace) -> dict[str, Any]:
    from zodi_core.pocket import build_pocket_models, render_card

    card = build_pocket_models(
        args.out, preset=args.preset, seed=args.seed, threads=args.threads, device=args.device,
        measure=not args.no_measure, keep_checkpoints=args.keep_checkpoints,
    )  # fmt: skip
    print(f"pocket models written to {args.out} (model card: {args.out}/MODEL_CARD.md)")
    for phase, p in card["phases"].items():
        print(
            f"  {phase}: {p['steps']} steps, loss {p['loss_first']:.4f} -> {p['loss_last']:.4f}, "
            f"{p['seconds']} s"
        )
    if "quality" in card:  # in the model card's words (its one owner)
        quality = render_card(card).partition("\n## ")[2].partition("\nSeconds:")[0]
        print(quality.strip())
    return {"out": args.out, **{key: card[key] for key in ("phases", "quality") if key in card}}
