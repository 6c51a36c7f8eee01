# DeepLabv3+ ResNet-50 as in the authors' release (SPEC §3): mmseg's stock DeepLabv3+ with a
# torchvision-layout ResNet (7x7 stem, ImageNet weights of torchvision), undilated (output stride
# 32), ASPP rates 6/12/18 with 256 channels, 48-channel low-level projection, no auxiliary head;
# cross-entropy averaged over the non-ignored pixels (PyTorch's CrossEntropyLoss(ignore_index=255)).
_base_ = ["mmseg::_base_/models/deeplabv3plus_r50-d8.py"]
model = dict(
    pretrained=None,
    backbone=dict(
        type="ResNet",
        strides=(1, 2, 2, 2),
        dilations=(1, 1, 1, 1),
        init_cfg=dict(
            type="Pretrained",
            checkpoint="https://download.pytorch.org/models/resnet50-0676ba61.pth",
        ),
    ),
    decode_head=dict(channels=256, dilations=(1, 6, 12, 18), loss_decode=dict(avg_non_ignore=True)),
    auxiliary_head=None,
)
