"""The quality filter: flags the rows of a scored manifest (never deletes one)."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from zodi_core import manifest


def filter_reasons(
    rows: Sequence[dict[str, Any]],
    *,
    min_layout_miou: float | None = None,
    min_clip: float | None = None,
    drop_lowest_fraction: float = 0.0,
) -> list[list[str]]:
    """The reasons each row is dropped (empty: kept), one list per row, in row order.

    Thresholds on ``layout_miou`` and ``clip_score`` (a null score was not measured: never fails);
    ``lowest <f> layout``: the ``floor(f * rows)`` lowest by ``layout_miou`` (null: not ranked;
    ties by sample_id), whatever the thresholds.
    """
    if not 0.0 <= drop_lowest_fraction < 1.0:
        raise ValueError(
            f"quality.drop_lowest_fraction: expected a number in [0, 1), received "
            f"{drop_lowest_fraction}"
        )
    reasons: list[list[str]] = [[] for _ in rows]
    for r, out in zip(rows, reasons, strict=True):
        miou, clip = r.get("layout_miou"), r.get("clip_score")
        if min_layout_miou is not None and miou is not None and miou < min_layout_miou:
            out.append(f"layout_miou {miou:.1f} < {min_layout_miou:g}")
        if min_clip is not None and clip is not None and clip < min_clip:
            out.append(f"clip_score {clip:.3f} < {min_clip:g}")
    ranked = sorted(
        (i for i, r in enumerate(rows) if r.get("layout_miou") is not None),
        key=lambda i: (rows[i]["layout_miou"], rows[i]["sample_id"]),
    )
    for i in ranked[: math.floor(drop_lowest_fraction * len(rows))]:
        reasons[i].append(f"lowest {drop_lowest_fraction:g} layout")
    return reasons


def apply_filter(
    scored_uri: str,
    out_uri: str,
    train_uri: str,
    *,
    min_layout_miou: float | None = None,
    min_clip: float | None = None,
    drop_lowest_fraction: float = 0.0,
) -> dict[str, Any]:
    """Flag the rows of a scored manifest; write every row (``out_uri``) and the kept rows
    (``train_uri``, what training reads). Returns the counts and the drops by reason."""
    table = manifest.read_manifest(scored_uri, "transfer")
    rows = table.to_pylist()
    settings = {
        "min_layout_miou": min_layout_miou,
        "min_clip": min_clip,
        "drop_lowest_fraction": drop_lowest_fraction,
    }
    reasons = filter_reasons(rows, **settings)
    for r, why in zip(rows, reasons, strict=True):
        r.update(kept=not why, drop_reason="; ".join(why) or None)
    # a reason's kind: its column, or lowest_fraction ("lowest 0.1 layout")
    kinds = [w.split(" ")[0].replace("lowest", "lowest_fraction") for why in reasons for w in why]
    kept = [r for r in rows if r["kept"]]
    if rows and not kept:
        raise ValueError(
            f"{scored_uri}: the quality filter drops all {len(rows)} rows; lower the thresholds "
            f"(quality.min_layout_miou, min_clip, drop_lowest_fraction; or the --min-* options)"
        )
    meta = manifest.manifest_metadata(table)
    meta["quality_filter"] = json.dumps(settings, sort_keys=True)
    manifest.write_manifest(rows, out_uri, "transfer", extra_metadata=meta)
    manifest.write_manifest(kept, train_uri, "transfer", extra_metadata=meta)
    return {
        "uri": out_uri,
        "train_uri": train_uri,
        "rows": len(rows),
        "kept": len(kept),
        "dropped": len(rows) - len(kept),
        "by_reason": dict(sorted(Counter(kinds).items())),
        "settings": settings,
    }
