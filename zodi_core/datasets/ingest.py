"""Ingestion: a dataset folder → a validated ``samples`` Parquet manifest.

Every sample is decoded fully (a truncated PNG fails here, not in training); every bad file is
reported as one line ``PATH: reason``, and fails the run unless ``skip_invalid`` (then it goes
to a ``rejects`` manifest beside the samples).
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from zodi_core import manifest, storage
from zodi_core.config import DatasetSpec
from zodi_core.datasets.io import decode_label, decode_png
from zodi_core.datasets.readers import Candidate, Problem, ScanResult, scan_dataset


class IngestError(ValueError):
    """Ingestion found bad files; ``problems`` holds every one, the message lists them a line each."""

    def __init__(self, message: str, problems: list[Problem]) -> None:
        super().__init__(message)
        self.problems = problems


@dataclass
class IngestResult:
    """What :func:`ingest_dataset` wrote; ``rejects_uri`` is set with ``skip_invalid`` only."""

    manifest_uri: str
    n_samples: int
    rejects: list[Problem] = field(default_factory=list)
    rejects_uri: str | None = None


def rejects_uri_for(out_uri: str) -> str:
    """Where the rejects of the manifest at ``out_uri`` go: ``<out without .parquet>.rejects.parquet``."""
    return f"{str(out_uri).removesuffix('.parquet')}.rejects.parquet"


def check_sample(
    candidate: Candidate, scan: ScanResult
) -> tuple[dict[str, Any] | None, list[Problem]]:
    """Decode one image/label pair fully and check it: (its manifest row or None, every problem;
    both files are checked even when the first is bad)."""
    problems: list[Problem] = []
    img_path, lab_path = str(candidate.image_path), str(candidate.label_path)
    image = label = None
    try:
        img_bytes = candidate.image_path.read_bytes()
        image = decode_png(img_bytes, img_path, mode="RGB")
    except (OSError, ValueError) as err:
        problems.append(Problem(img_path, str(err).removeprefix(f"{img_path}: ")))
    try:
        lab_bytes = candidate.label_path.read_bytes()
        label = decode_label(lab_bytes, lab_path, scan.label_format)
    except (OSError, ValueError) as err:
        problems.append(Problem(lab_path, str(err).removeprefix(f"{lab_path}: ")))
    if image is not None and label is not None and image.shape[:2] != label.shape:
        (h, w), (lh, lw) = image.shape[:2], label.shape
        reason = f"size {lw}x{lh} does not match its image {img_path} ({w}x{h})"
        problems.append(Problem(lab_path, reason))
    if problems:
        return None, problems
    return {
        "sample_id": candidate.sample_id,
        "dataset": scan.dataset,
        "split": scan.split,
        "domain": scan.domain,
        "label_format": scan.label_format,
        "image_uri": img_path,
        "label_uri": lab_path,
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "image_sha256": hashlib.sha256(img_bytes).hexdigest(),
        "label_sha256": hashlib.sha256(lab_bytes).hexdigest(),
    }, []


def ingest_dataset(
    spec: DatasetSpec,
    out_uri: str,
    *,
    skip_invalid: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> IngestResult:
    """Scan, decode and check a dataset; write its samples manifest atomically.

    Raises IngestError (nothing written) on bad files without ``skip_invalid``, or when no sample
    is valid. ``workers``: decoding threads (None: ``min(8, cpu count)``).
    """
    if workers is not None and workers < 1:
        raise ValueError(f"workers: expected an integer >= 1, received {workers}")
    if "://" in spec.root:
        raise ValueError(
            f"root: expected a local dataset folder (readers list files on disk), received "
            f"{spec.root!r}; copy the dataset locally first (the manifest may go to S3)"
        )
    root = Path(spec.root).expanduser().resolve()
    spec = spec.model_copy(update={"root": str(root)})

    # 1. list and pair files by id (layout problems: unpaired files, empty or missing folders).
    scan = scan_dataset(spec)
    problems = list(scan.problems)

    # 2. decode and check every pair, in parallel (PIL and hashlib release the GIL).
    # Not tqdm's thread_map: it deletes tqdm's class lock on exit, under any other bar still
    # running (two ingests in one process: "tqdm has no attribute '_lock'").
    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        checked = list(
            tqdm(
                pool.map(lambda c: check_sample(c, scan), scan.candidates),
                total=len(scan.candidates),
                desc=f"ingest {spec.manifest_name}",
                unit="img",
                disable=not progress or not scan.candidates,
            )
        )
    rows = [row for row, _ in checked if row is not None]
    problems += [p for _, bad in checked for p in bad]
    problems.sort(key=lambda p: (p.path, p.reason))

    # 3. fail with every problem listed, or keep the good rows.
    where, listed = f"{spec.dataset} at {root}", "\n".join(map(str, problems))
    if problems and not skip_invalid:
        raise IngestError(
            f"{len(problems)} problem(s) in {where}; no manifest written "
            f"(--skip-invalid writes the good samples):\n{listed}",
            problems,
        )
    if not rows:
        raise IngestError(f"no valid sample in {where}; no manifest written:\n{listed}", problems)

    # 4. write atomically: rejects first, so a manifest never appears without its rejects.
    rows.sort(key=lambda r: r["sample_id"])
    meta = {
        "dataset_spec": json.dumps(spec.model_dump(mode="json"), sort_keys=True),
        "n_rejected": str(len(problems)),
    }
    rejects_uri = rejects_uri_for(out_uri)
    if skip_invalid:
        rejects = [asdict(p) for p in problems]
        manifest.write_manifest(rejects, rejects_uri, "rejects", {"manifest": str(out_uri)})
    uri = manifest.write_manifest(rows, out_uri, "samples", extra_metadata=meta)
    if not skip_invalid:
        storage.delete(rejects_uri)  # a stale rejects list would describe another run
    return IngestResult(uri, len(rows), problems, rejects_uri if skip_invalid else None)
