"""The similarity loss as a pure function (paper Eq. 6), on fixed tensors."""

import math

import pytest
import torch

from zodi_core.seg.losses import (
    global_average_pool,
    scale_losses,
    select_stage,
    similarity_loss,
    sum_losses,
)


def test_similarity_loss_matches_hand_computation():
    # Pair 0: pooled features (1, 0) and (1, 1) → cos = 1/√2; pair 1: (0, 2) and (0, 3) → cos = 1.
    src = torch.tensor([[1.0, 0.0], [0.0, 2.0]])[:, :, None, None].expand(2, 2, 2, 3).clone()
    gen = torch.zeros(2, 2, 2, 3)
    gen[0, 0] = 1.0
    gen[0, 1] = torch.tensor([[0.0, 2.0, 1.0], [1.0, 2.0, 0.0]])  # mean 1
    gen[1, 1] = 3.0
    loss, cos = similarity_loss(src, gen, lambda_sim=0.1)
    expected_cos = torch.tensor([1 / math.sqrt(2), 1.0])
    torch.testing.assert_close(cos, expected_cos)
    torch.testing.assert_close(loss, 0.1 * (1 - expected_cos).mean())


def test_similarity_loss_sends_gradients_to_both_branches():
    src = torch.randn(3, 4, 2, 2, requires_grad=True)
    gen = torch.randn(3, 4, 2, 2, requires_grad=True)
    loss, _ = similarity_loss(src, gen)
    loss.backward()
    assert src.grad.abs().sum() > 0
    assert gen.grad.abs().sum() > 0


def test_similarity_loss_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="feat_gen"):
        similarity_loss(torch.zeros(2, 4, 2, 2), torch.zeros(2, 4, 3, 2))


def test_select_stage_picks_last_by_default_and_names_bad_index():
    stages = (torch.zeros(1, 2, 8, 8), torch.ones(1, 4, 4, 4))
    assert select_stage(stages, -1).shape == (1, 4, 4, 4)
    assert select_stage(stages, 0).shape == (1, 2, 8, 8)
    with pytest.raises(ValueError, match="feature_stage.*received 2"):
        select_stage(stages, 2)


def test_global_average_pool_handles_token_features():
    tokens = torch.arange(12.0).reshape(1, 3, 4)  # (N, L, C)
    torch.testing.assert_close(global_average_pool(tokens), torch.tensor([[4.0, 5.0, 6.0, 7.0]]))


def test_scale_and_sum_losses_touch_only_loss_terms():
    losses = {"decode.loss_ce": torch.tensor(1.5), "decode.acc_seg": torch.tensor(80.0),
              "aux.loss_ce": torch.tensor(0.5)}  # fmt: skip
    scaled = scale_losses(losses, 2.0)
    assert scaled["decode.loss_ce"].item() == 3.0 and scaled["decode.acc_seg"].item() == 80.0
    assert sum_losses(losses).item() == 2.0
    assert sum_losses(losses, "decode.").item() == 1.5
