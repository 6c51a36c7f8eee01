"""The similarity loss of ZoDi (SPEC §3, paper Eq. 6–8), as pure tensor functions; the
cross-entropy terms are the wrapped segmentor's own (:mod:`zodi_core.seg.segmentor`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def select_stage(features: Tensor | Sequence[Tensor], stage: int) -> Tensor:
    """Pick one stage, (N, C, H, W) float, of a backbone's output (a tensor or the tuple of
    stages); -1 is the last stage (layer4 of ResNet, the paper's F)."""
    stages = [features] if isinstance(features, Tensor) else list(features)
    if not -len(stages) <= stage < len(stages):
        raise ValueError(
            f"feature_stage: the backbone returns {len(stages)} stage(s), so expected an index in "
            f"{-len(stages)}..{len(stages) - 1}, received {stage}"
        )
    return stages[stage]


def global_average_pool(feature: Tensor) -> Tensor:
    """GAP of a (N, C, H, W) map → (N, C); sequence features (N, L, C) are averaged over L."""
    if feature.dim() == 4:
        return feature.mean(dim=(2, 3))
    if feature.dim() == 3:
        return feature.mean(dim=1)
    raise ValueError(
        f"feature: expected a (N, C, H, W) or (N, L, C) tensor, received shape {tuple(feature.shape)}"
    )


def similarity_loss(
    feat_src: Tensor, feat_gen: Tensor, lambda_sim: float = 0.1
) -> tuple[Tensor, Tensor]:
    """λ·(1 − cos(GAP(F(I)), GAP(F(I')))) averaged over the pairs (Eq. 6), gradients to both.

    ``feat_src``, ``feat_gen``: (N, C, H, W) F(I) and F(I'). Returns ``(loss, cos)``, cos (N,)
    in [-1, 1] still attached to the graph.
    """
    if feat_src.shape != feat_gen.shape:
        raise ValueError(
            f"feat_gen: expected the shape of feat_src {tuple(feat_src.shape)}, "
            f"received {tuple(feat_gen.shape)}"
        )
    cos = F.cosine_similarity(global_average_pool(feat_src), global_average_pool(feat_gen), dim=1)
    return lambda_sim * (1.0 - cos).mean(), cos


def scale_losses(losses: dict[str, Tensor], factor: float) -> dict[str, Tensor]:
    """Multiply every loss term (mmengine's rule: keys containing 'loss') by ``factor``."""
    return {k: (v * factor if "loss" in k else v) for k, v in losses.items()}


def sum_losses(losses: dict[str, Tensor | list[Tensor]], prefix: str = "") -> Tensor:
    """Sum of the loss terms whose key starts with ``prefix`` (detached, for logging)."""
    picked = [v for k, v in losses.items() if "loss" in k and k.startswith(prefix)]
    terms = [t for v in picked for t in (v if isinstance(v, list | tuple) else [v])]
    # A 0-dim CPU start adds to terms on any device (as a Python number would).
    return sum((t.detach().mean() for t in terms), torch.zeros(()))
