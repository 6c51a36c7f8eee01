# ZoDi adaptation of the stock mmseg R-50-D8: the same few lines as for the release's model.
_base_ = ["./deeplabv3plus_r50-d8_source-only_4xb-100e_cityscapes-512x1024.py"]
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
