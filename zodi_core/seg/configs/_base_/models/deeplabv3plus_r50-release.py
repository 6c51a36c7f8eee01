# DeepLabv3+ ResNet-50 as in the authors' release (SPEC §3): torchvision-layout ResNet (7x7 stem,
# ImageNet weights of torchvision), undilated (output stride 32), ASPP rates 6/12/18 with 256
# channels, 48-channel low-level projection, no auxiliary head; cross-entropy averaged over the
# non-ignored pixels (PyTorch's CrossEntropyLoss(ignore_index=255)).
norm_cfg = dict(type="SyncBN", requires_grad=True)
data_preprocessor = dict(
    type="SegDataPreProcessor",
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
)
model = dict(
    type="EncoderDecoder",
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type="ResNet",
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        strides=(1, 2, 2, 2),
        dilations=(1, 1, 1, 1),
        norm_cfg=norm_cfg,
        norm_eval=False,
        style="pytorch",
        init_cfg=dict(
            type="Pretrained",
            checkpoint="https://download.pytorch.org/models/resnet50-0676ba61.pth",
        ),
    ),
    decode_head=dict(
        type="DepthwiseSeparableASPPHead",
        in_channels=2048,
        in_index=3,
        channels=256,
        dilations=(1, 6, 12, 18),
        c1_in_channels=256,
        c1_channels=48,
        dropout_ratio=0.1,
        num_classes=19,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0, avg_non_ignore=True
        ),
    ),
    train_cfg=dict(),
    test_cfg=dict(mode="whole"),
)
