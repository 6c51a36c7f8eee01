"""``zodi synth`` and ``zodi ingest``: make the synthetic data, turn a dataset into a manifest."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from zodi_cli._common import RunFailed, command, field_options, given, size
from zodi_core.config import DatasetSpec

#: The DatasetSpec fields ingest's options set.
SPEC_FIELDS = ("dataset", "root", "split", "condition", "subset", "subset_seed")


def add_parsers(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    command(sub, parent, "synth", run_synth,
        "write synthetic Cityscapes/ACDC/GTA5-style datasets with exact labels",
        "Write procedural street scenes with exact labels in the real layouts: OUT/cityscapes "
        "(leftImg8bit + gtFine labelIds and colour), OUT/acdc (night, fog, rain, snow renderings "
        "of other scenes, gt_labelTrainIds) and OUT/gta5 (game look). Deterministic by seed.",
        {
            "--out": {"required": True, "help": "destination folder"},
            "--seed": {"type": int, "default": 0, "help": "base seed (default: %(default)s)"},
            "--size": {"type": size, "default": (256, 128), "help": "WIDTHxHEIGHT (default: 256x128)"},
            "--n-train": {"type": int, "default": 8, "help": "Cityscapes train images (default: 8)"},
            "--n-val": {"type": int, "default": 4, "help": "Cityscapes val images (default: 4)"},
            "--n-target": {"type": int, "default": 4, "help": "ACDC images per condition (default: 4)"},
            "--n-gta": {"type": int, "default": 8, "help": "GTA5-style images (default: 8)"},
        },
    )  # fmt: skip
    command(sub, parent, "ingest", run_ingest,
        "validate a dataset folder and write its Parquet samples manifest",
        "Pair images and labels by id, decode and check every sample, and write a Parquet "
        "'samples' manifest atomically. Every bad file is reported as 'PATH: reason'; any bad "
        "file fails the run (exit 1, no manifest) unless --skip-invalid, which writes the good "
        "samples and OUT.rejects.parquet (OUT without its .parquet suffix).",
        {
            **field_options(DatasetSpec, *SPEC_FIELDS),
            "--out": {"required": True, "help": "manifest URI (local path or s3://bucket/key)"},
            "--skip-invalid": {"action": "store_true",
                               "help": "write the good samples and a rejects list"},
            "--workers": {"type": int, "help": "decoding threads (default: min(8, CPUs))"},
            "--no-progress": {"action": "store_true", "help": "no progress bar on stderr"},
        },
    )  # fmt: skip


def run_synth(args: argparse.Namespace) -> dict[str, Any]:
    from zodi_core.datasets.synth import write_synthetic

    out = write_synthetic(
        args.out, seed=args.seed, size=args.size, n_train=args.n_train, n_val=args.n_val,
        n_target=args.n_target, n_gta=args.n_gta,
    )  # fmt: skip
    for name in ("cityscapes", "acdc", "gta5"):
        print(f"{name}: {out[name]}", file=sys.stderr)
    return out


def run_ingest(args: argparse.Namespace) -> dict[str, Any]:
    from zodi_core.datasets.ingest import IngestError, ingest_dataset

    spec = DatasetSpec(**given(args, SPEC_FIELDS))
    try:
        result = ingest_dataset(
            spec, args.out, skip_invalid=args.skip_invalid, workers=args.workers,
            progress=not args.no_progress,
        )  # fmt: skip
    except IngestError as err:
        first, *problems = str(err).splitlines()  # one line per bad file
        print(*problems, sep="\n", file=sys.stderr)
        raise RunFailed(first, {"rejects": [str(p) for p in err.problems]}) from err
    for p in result.rejects:
        print(f"rejected: {p}", file=sys.stderr)
    print(f"wrote {result.manifest_uri} ({result.n_samples} samples)", file=sys.stderr)
    if result.rejects_uri:
        print(f"wrote {result.rejects_uri} ({len(result.rejects)} rejected)", file=sys.stderr)
    return {
        "manifest": result.manifest_uri,
        "samples": result.n_samples,
        "rejected": len(result.rejects),
        "rejects_uri": result.rejects_uri,
    }
