# The release's DeepLabv3+ with ResNet-101 (paper Table 3); ZoDi is added by `zodi train`.
_base_ = ["./deeplabv3plus_r50-release_4xb-100e_cityscapes-512x1024.py"]
model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(
            type="Pretrained",
            checkpoint="https://download.pytorch.org/models/resnet101-63fe2227.pth",
        ),
    )
)
