"""Readers for the real dataset layouts (SPEC §4): Cityscapes, ACDC, GTA5.

A reader pairs images with labels **by id** (never by listing order), decoding nothing, and
returns the pairs and every layout problem, each naming a path.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zodi_core.config import DatasetSpec


@dataclass(frozen=True)
class Candidate:
    """An image and its label, paired by id; not yet decoded."""

    sample_id: str
    image_path: Path
    label_path: Path


@dataclass(frozen=True)
class Problem:
    """A bad file or folder: ``str(problem)`` is the one-line report ``PATH: reason``."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class ScanResult:
    """What a reader found: candidate pairs sorted by sample_id, and layout problems."""

    dataset: str
    split: str
    domain: str
    label_format: str
    candidates: list[Candidate] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def sample_id_problem(sample_id: str) -> str | None:
    """Why ``sample_id`` cannot be a sample id, or None when it can: an id is one component of
    storage keys (``images/<domain>/<id>.png``)."""
    if not sample_id:
        return "empty sample id"
    if ".." in sample_id:
        return f"sample id {sample_id!r} contains '..'; rename the file"
    if "/" in sample_id or "\\" in sample_id:
        return f"sample id {sample_id!r} contains a path separator ('/' or '\\'); rename the file"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in sample_id):
        return f"sample id {sample_id!r} contains a control character; rename the file"
    return None


def _files_by_key(folder: Path, suffix: str, depth: int) -> dict[str, Path]:
    """Files named ``<id><suffix>`` exactly ``depth`` (0 or 1) folders below ``folder``, keyed on
    ``folder/id`` (so that a file filed under the wrong city or sequence does not pair) or the id."""
    pattern = "/".join(["*"] * depth + [f"*{suffix}"])
    return {
        f"{p.parent.name}/{p.name[: -len(suffix)]}" if depth else p.name[: -len(suffix)]: p
        for p in sorted(folder.glob(pattern))
        if p.is_file()
    }


def _subset_keys(
    keys: Iterable[str], subset: int | None, seed: int, where: Path
) -> set[str] | None:
    """A random subset of ``subset`` image ids, drawn among the sorted ids with ``seed``: it
    depends only on the image list and the seed (the same rule for every reader)."""
    if subset is None:
        return None
    ids = sorted(keys)
    if subset > len(ids):
        raise ValueError(
            f"subset: expected at most the {len(ids)} images in {where}, received {subset}; "
            f"lower it (--subset) or leave it out to take every image"
        )
    pick = np.random.default_rng(seed).choice(len(ids), size=subset, replace=False)
    return {ids[i] for i in pick}


#: Each dataset's layout: image and label folders (formatted with the spec's ``split`` and
#: ``condition``), their file suffixes, the sample path shown in problems, and the label format.
LAYOUTS = {
    "cityscapes": (
        "leftImg8bit/{split}",
        "gtFine/{split}",
        "_leftImg8bit.png",
        "_gtFine_labelIds.png",
        "<city>/<city>_<seq>_<frame>",
        "label_ids",
    ),
    "acdc": (
        "rgb_anon/{condition}/{split}",
        "gt/{condition}/{split}",
        "_rgb_anon.png",
        "_gt_labelTrainIds.png",
        "<sequence>/<name>",
        "train_ids",
    ),
    "gta5": ("images", "labels", ".png", ".png", "<nnnnn>", "label_ids"),
}


def scan_dataset(spec: DatasetSpec) -> ScanResult:
    """Pair ``<root>/<image folder>/<name><image suffix>`` with the label of the same ``name``
    (``<folder>/<id>`` or ``<id>``) in the spec's layout (:data:`LAYOUTS`). Labels without an
    image are reported whatever the subset; the same id in two folders is a misplaced copy: the
    second is a problem.
    """
    *folders, img_suffix, gt_suffix, name, label_format = (
        v.format(split=spec.split, condition=spec.condition) for v in LAYOUTS[spec.dataset]
    )
    split = "all" if spec.dataset == "gta5" else spec.split
    domain = {"acdc": spec.condition, "gta5": "game"}.get(spec.dataset, "source")
    result = ScanResult(spec.dataset, split, domain, label_format)
    (img_dir, gt_dir), depth = (Path(spec.root) / f for f in folders), name.count("/")
    layouts = [
        f"<root>/{f}/{name}{s} ({result.dataset} layout)"
        for f, s in zip(folders, (img_suffix, gt_suffix), strict=True)
    ]
    for folder, layout in ((img_dir, layouts[0]), (gt_dir, layouts[1])):
        if not folder.is_dir():
            reason = f"wrong layout: folder not found; expected {layout}"
            result.problems.append(Problem(str(folder), reason))
    if result.problems:
        return result
    images = _files_by_key(img_dir, img_suffix, depth)
    labels = _files_by_key(gt_dir, gt_suffix, depth)
    if not images and not labels:
        reason = f"empty folder: no images matching {layouts[0]}"
        result.problems.append(Problem(str(img_dir), reason))
        return result
    keep = _subset_keys(images, spec.subset, spec.subset_seed, img_dir)
    seen: dict[str, Path] = {}
    for key in sorted(images.keys() | labels.keys()):
        if keep is not None and key in images and key not in keep:
            continue
        image, label = images.get(key), labels.get(key)
        sample_id = key.rpartition("/")[2]
        if image is None:
            reason = f"label without image (expected {img_dir / (key + img_suffix)})"
            result.problems.append(Problem(str(label), reason))
        elif label is None:
            reason = f"image without label (expected {gt_dir / (key + gt_suffix)})"
            result.problems.append(Problem(str(image), reason))
        elif sample_id in seen:
            reason = f"duplicate sample id {sample_id!r} (also {seen[sample_id]})"
            result.problems.append(Problem(str(image), reason))
        elif reason := sample_id_problem(sample_id):  # rejects only its own sample
            result.problems.append(Problem(str(image), reason))
        else:
            seen[sample_id] = image
            result.candidates.append(Candidate(sample_id, image, label))
    result.candidates.sort(key=lambda c: c.sample_id)
    return result
