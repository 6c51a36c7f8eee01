"""Readers for the real on-disk dataset layouts (SPEC §4): Cityscapes, ACDC, GTA5.

A reader lists a dataset folder and pairs images with labels **by id** (never by listing order),
without decoding anything. It returns the candidate pairs and every layout problem it found
(image without label, label without image, empty folder, wrong layout), each naming a path.
Decoding and checking the pixels is :mod:`zodi_core.datasets.ingest`'s job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zodi_core.config import ACDC_CONDITIONS, DatasetSpec

#: label_format of each dataset's label files (see zodi_core.datasets.io.read_label).
DATASET_LABEL_FORMAT = {"cityscapes": "label_ids", "acdc": "train_ids", "gta5": "label_ids"}
#: domain column of each dataset's samples (ACDC: the condition).
DATASET_DOMAIN = {"cityscapes": "source", "gta5": "game"}

CITYSCAPES_IMAGE_SUFFIX = "_leftImg8bit.png"
CITYSCAPES_LABEL_SUFFIX = "_gtFine_labelIds.png"
ACDC_IMAGE_SUFFIX = "_rgb_anon.png"
ACDC_LABEL_SUFFIX = "_gt_labelTrainIds.png"


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
    """Why ``sample_id`` cannot be a sample id, or None when it can.

    An id becomes part of storage keys (``images/<domain>/<id>.png``), so it must stay one path
    component: not empty, no ``..``, no ``/`` or ``\\``, no control characters. Anything else
    (``:``, spaces, unicode) is allowed.
    """
    if not sample_id:
        return "empty sample id"
    if ".." in sample_id:
        return f"sample id {sample_id!r} contains '..'; rename the file"
    if "/" in sample_id or "\\" in sample_id:
        return f"sample id {sample_id!r} contains a path separator ('/' or '\\'); rename the file"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in sample_id):
        return f"sample id {sample_id!r} contains a control character; rename the file"
    return None


def _files_by_id(folder: Path, suffix: str, depth: int) -> dict[str, Path]:
    """Files named ``<id><suffix>`` exactly ``depth`` folders below ``folder``, keyed by id."""
    pattern = "/".join(["*"] * depth + [f"*{suffix}"])
    out: dict[str, Path] = {}
    for p in sorted(folder.glob(pattern)):
        if p.is_file():
            out[p.name[: -len(suffix)]] = p
    return out


def _pair(
    result: ScanResult,
    images: dict[str, Path],
    labels: dict[str, Path],
    expected_label: Callable[[str], Path],
    expected_image: Callable[[str], Path],
    keep: set[str] | None = None,
) -> None:
    """Join images and labels on id; report each unpaired file with the path it expected.

    ``keep``: ids of the images to keep (a random subset); the labels of images left out are
    ignored, but a label without any image is reported whatever the subset.
    """
    for key in sorted(images.keys() | labels.keys()):
        if keep is not None and key in images and key not in keep:
            continue
        img, lab = images.get(key), labels.get(key)
        if img is not None and lab is not None:
            result.candidates.append(Candidate(key, img, lab))
        elif img is not None:
            reason = f"image without label (expected {expected_label(key)})"
            result.problems.append(Problem(str(img), reason))
        else:
            reason = f"label without image (expected {expected_image(key)})"
            result.problems.append(Problem(str(lab), reason))


def _subset_keys(
    keys: Iterable[str], subset: int | None, seed: int, where: Path
) -> set[str] | None:
    """A random subset of ``subset`` image ids, drawn among the sorted ids with ``seed``."""
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


def _require_dir(result: ScanResult, path: Path, expected: str) -> bool:
    if path.is_dir():
        return True
    result.problems.append(
        Problem(str(path), f"wrong layout: folder not found; expected {expected}")
    )
    return False


def scan_cityscapes(
    root: str | Path, split: str = "train", subset: int | None = None, subset_seed: int = 0
) -> ScanResult:
    """Cityscapes ``leftImg8bit/<split>/<city>/<frame id>_leftImg8bit.png`` with
    ``gtFine/<split>/<city>/<frame id>_gtFine_labelIds.png``; sample_id = frame id
    (``<city>_<seq>_<frame>``), joined on (city, frame id). ``subset``: see :func:`scan_gta5`."""
    result = ScanResult(
        "cityscapes", split, DATASET_DOMAIN["cityscapes"], DATASET_LABEL_FORMAT["cityscapes"]
    )
    root = Path(root)
    _scan_folder_pairs(
        result,
        root / "leftImg8bit" / split,
        root / "gtFine" / split,
        CITYSCAPES_IMAGE_SUFFIX,
        CITYSCAPES_LABEL_SUFFIX,
        f"<root>/leftImg8bit/{split}/<city>/<city>_<seq>_<frame>",
        f"<root>/gtFine/{split}/<city>/<frame id>",
        "Cityscapes",
        subset,
        subset_seed,
    )
    result.candidates = [
        Candidate(c.sample_id.split("/", 1)[1], c.image_path, c.label_path)
        for c in result.candidates
    ]
    return result


def _scan_folder_pairs(
    result: ScanResult,
    img_dir: Path,
    gt_dir: Path,
    image_suffix: str,
    label_suffix: str,
    image_layout: str,
    label_layout: str,
    dataset: str,
    subset: int | None,
    subset_seed: int,
    depth: int = 1,
) -> None:
    """Pair ``img_dir/<folder>/<id><image_suffix>`` with ``gt_dir/<folder>/<id><label_suffix>``
    into ``result``, keyed on "folder/id" so that a file filed under the wrong folder (city,
    sequence) does not pair (``depth=0``: ``img_dir/<id><image_suffix>``, keyed on the id).
    Missing folders and an empty image folder are problems."""
    layout = f"{image_layout}{image_suffix}"
    ok = _require_dir(result, img_dir, f"{layout} ({dataset} layout)")
    ok &= _require_dir(result, gt_dir, f"{label_layout}{label_suffix} ({dataset} layout)")
    if not ok:
        return

    def by_key(folder: Path, suffix: str) -> dict[str, Path]:
        found = _files_by_id(folder, suffix, depth)
        return {(f"{p.parent.name}/{sid}" if depth else sid): p for sid, p in found.items()}

    images, labels = by_key(img_dir, image_suffix), by_key(gt_dir, label_suffix)
    if not images and not labels:
        result.problems.append(Problem(str(img_dir), f"empty folder: no images matching {layout}"))
        return
    _pair(
        result,
        images,
        labels,
        lambda key: gt_dir / f"{key}{label_suffix}",
        lambda key: img_dir / f"{key}{image_suffix}",
        _subset_keys(images, subset, subset_seed, img_dir),
    )


def scan_acdc(
    root: str | Path,
    condition: str,
    split: str = "val",
    subset: int | None = None,
    subset_seed: int = 0,
) -> ScanResult:
    """ACDC ``rgb_anon/<condition>/<split>/<sequence>/<name>_rgb_anon.png`` with
    ``gt/<condition>/<split>/<sequence>/<name>_gt_labelTrainIds.png``; sample_id = name.
    ``subset``: see :func:`scan_gta5`."""
    if condition not in ACDC_CONDITIONS:
        raise ValueError(
            f"condition: expected one of {', '.join(map(repr, ACDC_CONDITIONS[:-1]))} or "
            f"{ACDC_CONDITIONS[-1]!r} for acdc, "
            f"received {condition!r}"
        )
    root = Path(root)
    result = ScanResult("acdc", split, condition, DATASET_LABEL_FORMAT["acdc"])
    _scan_folder_pairs(
        result,
        root / "rgb_anon" / condition / split,
        root / "gt" / condition / split,
        ACDC_IMAGE_SUFFIX,
        ACDC_LABEL_SUFFIX,
        f"<root>/rgb_anon/{condition}/{split}/<sequence>/<name>",
        f"<root>/gt/{condition}/{split}/<sequence>/<name>",
        "ACDC",
        subset,
        subset_seed,
    )
    paired, seen = [], {}
    for c in result.candidates:
        name = c.sample_id.split("/", 1)[1]
        if name in seen:  # ACDC names carry the sequence, so a repeat is a misplaced copy
            result.problems.append(
                Problem(str(c.image_path), f"duplicate sample id {name!r} (also {seen[name]})")
            )
            continue
        seen[name] = c.image_path
        paired.append(Candidate(name, c.image_path, c.label_path))
    result.candidates = sorted(paired, key=lambda c: c.sample_id)
    return result


def scan_gta5(root: str | Path, subset: int | None = None, subset_seed: int = 0) -> ScanResult:
    """GTA5 ``images/<nnnnn>.png`` with ``labels/<nnnnn>.png``; sample_id = ``<nnnnn>``.

    ``subset``: keep a random subset of this many images, drawn among all image ids (sorted)
    with ``numpy.random.default_rng(subset_seed)``, so the subset depends only on the image list
    and the seed (the same rule for every reader). Labels without an image are reported whatever
    the subset.
    """
    root = Path(root)
    result = ScanResult("gta5", "all", DATASET_DOMAIN["gta5"], DATASET_LABEL_FORMAT["gta5"])
    _scan_folder_pairs(
        result, root / "images", root / "labels", ".png", ".png", "<root>/images/<nnnnn>",
        "<root>/labels/<nnnnn>", "GTA5", subset, subset_seed, depth=0,
    )  # fmt: skip
    return result


def scan_dataset(spec: DatasetSpec) -> ScanResult:
    """Dispatch on ``spec.dataset`` to the reader of its layout."""
    if spec.dataset == "cityscapes":
        return scan_cityscapes(spec.root, spec.split, spec.subset, spec.subset_seed)
    if spec.dataset == "acdc":
        return scan_acdc(spec.root, spec.condition, spec.split, spec.subset, spec.subset_seed)
    if spec.dataset == "gta5":
        return scan_gta5(spec.root, spec.subset, spec.subset_seed)
    raise ValueError(f"dataset: expected one of cityscapes, acdc, gta5, received {spec.dataset!r}")
