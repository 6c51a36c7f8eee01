# Demo ZoDi adaptation: the demo source-only config plus the similarity loss on synthetic pairs.
_base_ = ["./deeplabv3plus_r18-tiny_source-only_2xb-demo_synthetic-64x128.py"]
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
