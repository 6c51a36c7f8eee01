# Source-only baseline with ResNet-101 (paper Table 3), otherwise the release's layout.
_base_ = ["./deeplabv3plus_r50-release_source-only_4xb-100e_cityscapes-512x1024.py"]
model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(
            type="Pretrained",
            checkpoint="https://download.pytorch.org/models/resnet101-63fe2227.pth",
        ),
    )
)
