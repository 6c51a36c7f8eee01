# ZoDi adaptation with ResNet-101 (paper Table 3).
_base_ = ["./deeplabv3plus_r101-release_source-only_4xb-100e_cityscapes-512x1024.py"]
model = dict(
    _delete_=True,
    type="ZoDiSegmentor",
    segmentor={{_base_.model}},
    lambda_sim=0.1,
    feature_stage=-1,
    scheme="release",
)
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type="ZoDiPairedDataset",
        manifest="",
        pipeline={{_base_.paired_train_pipeline}},
    )
)
