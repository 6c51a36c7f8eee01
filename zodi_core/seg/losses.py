"""The similarity loss of ZoDi (SPEC §3, paper Eq. 6–8), as pure tensor functions.

L = λ·L_sim + CE(H(F(I)), y) + CE(H(F(I')), y), with L_sim = 1 − cos(GAP(F(I)), GAP(F(I'))).
The cross-entropy terms come from the wrapped segmentor's own heads (see
:class:`zodi_core.seg.segmentor.ZoDiSegmentor`); this module holds the part that is ZoDi's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def select_stage(features: Tensor | Sequence[Tensor], stage: int) -> Tensor:
    """Pick one stage of a backbone's output.

    Args:
        features: a (N, C, H, W) tensor, or the tuple of stage outputs most mmseg backbones return
            (ResNet with ``out_indices=(0, 1, 2, 3)``: layer1..layer4).
        stage: index into that tuple; -1 is the last stage (layer4 of ResNet, the paper's F).
    Returns:
        (N, C, H, W) float feature map of the selected stage.
    """
    if isinstance(features, Tensor):
        if stage not in (0, -1):
            raise ValueError(
                f"feature_stage: the backbone returns a single feature map, so expected 0 or -1, "
                f"received {stage}"
            )
        return features
    features = list(features)
    if not -len(features) <= stage < len(features):
        raise ValueError(
            f"feature_stage: the backbone returns {len(features)} stages, so expected an index in "
            f"{-len(features)}..{len(features) - 1}, received {stage}"
        )
    return features[stage]


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

    Args:
        feat_src: (N, C, H, W) features F(I) of the source images.
        feat_gen: (N, C, H, W) features F(I') of their generated twins (same order).
        lambda_sim: λ, the weight of the similarity term (paper: 0.1).
    Returns:
        ``(loss, cos)``: the weighted scalar loss, and the (N,) cosine per pair in [-1, 1]
        (still attached to the graph; detach it for logging).
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
    total = torch.zeros(())
    for k, v in losses.items():
        if "loss" in k and k.startswith(prefix):
            values = v if isinstance(v, (list, tuple)) else [v]
            for item in values:
                total = total.to(item.device) + item.detach().mean()
    return total
