"""ZoDiSegmentor: Eq. 8 by hand, gradients, the two schemes, and other backbones/heads."""

import copy

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config, ConfigDict
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from seg_testdata import torch_single_thread  # noqa: F401  (autouse fixture)

import zodi_core.seg  # noqa: F401  (registers the ZoDi components)
from zodi_core.seg.segmentor import ZoDiSegmentor
from zodi_core.seg.train import CONFIG_DIR

H, W = 32, 64
PREPROCESSOR = dict(
    type="SegDataPreProcessor",
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(H, W),
)


def tiny_deeplab() -> dict:
    cfg = Config.fromfile(str(CONFIG_DIR / "_base_/models/deeplabv3plus_r18-tiny.py"))
    model = cfg.model.to_dict()
    model["data_preprocessor"] = dict(PREPROCESSOR)
    return model


def tiny_segformer() -> dict:
    return dict(
        type="EncoderDecoder",
        data_preprocessor=dict(PREPROCESSOR),
        backbone=dict(
            type="MixVisionTransformer", in_channels=3, embed_dims=8, num_stages=4,
            num_layers=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], patch_sizes=[7, 3, 3, 3],
            sr_ratios=[8, 4, 2, 1], out_indices=(0, 1, 2, 3), mlp_ratio=2, drop_path_rate=0.0,
        ),
        decode_head=dict(
            type="SegformerHead", in_channels=[8, 16, 32, 64], in_index=[0, 1, 2, 3],
            channels=16, dropout_ratio=0.1, num_classes=19, norm_cfg=dict(type="BN"),
            align_corners=False,
            loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
        ),
        train_cfg=dict(),
        test_cfg=dict(mode="whole"),
    )  # fmt: skip


def tiny_fcn_with_aux() -> dict:
    """A dilated ResNetV1c (output stride 8) + FCN head + auxiliary head, like mmseg's -D8."""
    norm = dict(type="BN", requires_grad=True)
    return dict(
        type="EncoderDecoder",
        data_preprocessor=dict(PREPROCESSOR),
        backbone=dict(
            type="ResNetV1c", depth=18, stem_channels=16, base_channels=8,
            out_indices=(0, 1, 2, 3), dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1),
            norm_cfg=norm, contract_dilation=True,
        ),
        decode_head=dict(
            type="FCNHead", in_channels=64, in_index=3, channels=16, num_convs=1,
            num_classes=19, norm_cfg=norm, dropout_ratio=0.1, align_corners=False,
        ),
        auxiliary_head=dict(
            type="FCNHead", in_channels=32, in_index=2, channels=8, num_convs=1,
            num_classes=19, norm_cfg=norm, dropout_ratio=0.1, align_corners=False,
            loss_decode=dict(type="CrossEntropyLoss", loss_weight=0.4),
        ),
        train_cfg=dict(),
        test_cfg=dict(mode="whole"),
    )  # fmt: skip


def build(segmentor: dict, **kwargs) -> ZoDiSegmentor:
    init_default_scope("mmseg")
    torch.manual_seed(0)
    # ConfigDict as from a config file (mmseg reads test_cfg.mode by attribute).
    return MODELS.build(ConfigDict(type="ZoDiSegmentor", segmentor=segmentor, **kwargs))


def paired_batch(n: int = 2, seed: int = 0) -> dict:
    """Packed pairs as the dataloader gives them: uint8 images, labels with some 255."""
    g = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(n):
        label = torch.randint(0, 19, (1, H, W), generator=g)
        label[:, :, :4] = 255
        s = SegDataSample(metainfo=dict(img_shape=(H, W), ori_shape=(H, W), pad_shape=(H, W)))
        s.gt_sem_seg = PixelData(data=label)
        samples.append(s)
    return {
        "inputs": [torch.randint(0, 256, (3, H, W), generator=g, dtype=torch.uint8) for _ in range(n)],
        "gen_inputs": [torch.randint(0, 256, (3, H, W), generator=g, dtype=torch.uint8) for _ in range(n)],
        "data_samples": samples,
    }  # fmt: skip


def total(model: ZoDiSegmentor, losses: dict) -> torch.Tensor:
    return model.parse_losses(losses)[0]


def pair_losses(model: ZoDiSegmentor, inputs, samples, scheme: str) -> dict:
    """All loss terms of a paired batch under ``scheme``, no step (the release scheme's two
    passes merged into one dict)."""
    if scheme == "concat":
        return model.loss(inputs, samples)
    n = model.num_pairs(samples)
    out = model.source_pass(inputs[:n], inputs[n:], samples[:n])
    out.update(model.generated_pass(inputs[n:], samples[n:]))
    return out


def test_zodi_loss_equals_lambda_cos_plus_two_ce_by_hand():
    model = build(tiny_deeplab(), lambda_sim=0.1).eval()
    data = model.data_preprocessor(paired_batch(), True)
    x, samples = data["inputs"], data["data_samples"]
    n = 2
    with torch.no_grad():
        got_concat = total(model, pair_losses(model, x, samples, "concat"))
        got_release = total(model, pair_losses(model, x, samples, "release"))
        seg = model.segmentor
        feats = seg.backbone(x)
        pooled = feats[-1].mean(dim=(2, 3))
        cos = F.cosine_similarity(pooled[:n], pooled[n:], dim=1)
        logits = F.interpolate(
            seg.decode_head(feats), size=(H, W), mode="bilinear", align_corners=False
        )
        labels = torch.stack([s.gt_sem_seg.data[0] for s in samples])
        ce_src = F.cross_entropy(logits[:n], labels[:n], ignore_index=255)
        ce_gen = F.cross_entropy(logits[n:], labels[n:], ignore_index=255)
    expected = 0.1 * (1 - cos).mean() + ce_src + ce_gen
    torch.testing.assert_close(got_concat, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_release, expected, rtol=1e-5, atol=1e-5)


def test_zodi_gradients_reach_both_branches():
    model = build(tiny_deeplab()).eval()
    data = model.data_preprocessor(paired_batch(), True)
    x = data["inputs"].clone().requires_grad_(True)
    losses = pair_losses(model, x, data["data_samples"], "release")
    losses["loss_sim"].backward()
    assert x.grad[:2].abs().sum() > 0, "no gradient of L_sim into the source branch"
    assert x.grad[2:].abs().sum() > 0, "no gradient of L_sim into the generated branch"
    assert model.segmentor.backbone.layer4[0].conv1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("make", [tiny_deeplab, tiny_segformer, tiny_fcn_with_aux])
def test_zodi_schemes_agree_in_eval_mode_on_any_backbone_and_head(make):
    model = build(make()).eval()
    data = model.data_preprocessor(paired_batch(), True)
    x, samples = data["inputs"], data["data_samples"]
    grads, logs = {}, {}
    for scheme in ("concat", "release"):
        model.zero_grad()
        logs[scheme] = pair_losses(model, x, samples, scheme)
        loss = total(model, logs[scheme])
        loss.backward()
        grads[scheme] = (
            loss.detach(),
            [p.grad.clone() for p in model.parameters() if p.grad is not None],
        )
    torch.testing.assert_close(grads["concat"][0], grads["release"][0], rtol=1e-5, atol=1e-5)
    for key in ("loss_sim", "cos_mean", "ce_src", "ce_gen"):  # logged the same way by both
        torch.testing.assert_close(logs["concat"][key], logs["release"][key], rtol=1e-5, atol=1e-5)
    for a, b in zip(grads["concat"][1], grads["release"][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("scheme", ["release", "concat"])
@pytest.mark.parametrize("make", [tiny_deeplab, tiny_segformer])
def test_zodi_train_step_logs_similarity_terms_and_updates(make, scheme):
    model = build(make(), scheme=scheme).train()
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    before = copy.deepcopy(model.segmentor.backbone.state_dict())
    log = model.train_step(paired_batch(), optim)
    for key in ("loss", "loss_sim", "cos_mean", "ce_src", "ce_gen"):
        assert key in log and torch.isfinite(log[key]), key
    torch.testing.assert_close(log["loss_sim"], 0.1 * (1 - log["cos_mean"]))
    changed = [
        k for k, v in model.segmentor.backbone.state_dict().items() if not torch.equal(v, before[k])
    ]
    assert changed, "the optimizer step did not change the backbone"


def test_zodi_plain_batches_train_as_the_wrapped_segmentor():
    model = build(tiny_deeplab()).train()
    batch = paired_batch()
    del batch["gen_inputs"]
    log = model.train_step(batch, OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1)))
    assert "decode.loss_ce" in log and "loss_sim" not in log


def test_zodi_predict_delegates_to_the_wrapped_segmentor():
    model = build(tiny_deeplab()).eval()
    batch = paired_batch()
    del batch["gen_inputs"]
    out = model.val_step(batch)
    assert out[0].pred_sem_seg.data.shape == (1, H, W)


def test_zodi_rejects_unknown_scheme_and_mixed_roles():
    with pytest.raises(ValueError, match="scheme.*'concatenate'"):
        build(tiny_deeplab(), scheme="concatenate")
    model = build(tiny_deeplab())
    data = model.data_preprocessor(paired_batch(), True)
    samples = data["data_samples"]
    with pytest.raises(ValueError, match="roles"):
        model.num_pairs(samples[:3])


def test_zodi_release_scheme_refuses_gradient_accumulation():
    model = build(tiny_deeplab(), scheme="release")
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), accumulative_counts=2)
    with pytest.raises(ValueError, match="accumulative_counts"):
        model.train_step(paired_batch(), optim)
