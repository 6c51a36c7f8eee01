# A tiny DeepLabv3+ of the release's layout for CPU demos and tests: ResNet-18 with 16 base
# channels (stages 16/32/64/128), undilated, ASPP rates 6/12/18, plain BN, no pretrained weights.
_base_ = ["./deeplabv3plus_r50-release.py"]
norm_cfg = dict(type="BN", requires_grad=True)
model = dict(
    backbone=dict(depth=18, stem_channels=16, base_channels=16, norm_cfg=norm_cfg, init_cfg=None),
    decode_head=dict(
        in_channels=128, channels=32, c1_in_channels=16, c1_channels=8, norm_cfg=norm_cfg
    ),
)
