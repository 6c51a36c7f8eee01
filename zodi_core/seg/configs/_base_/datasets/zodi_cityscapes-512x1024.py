# Manifest-backed data at the paper's resolution (§4.1): images resized to 512x1024, random
# 384x768 crops, horizontal flip, colour jitter 0.5; evaluation at 512x1024 (images and labels).
# Manifest URIs are filled in by `zodi train` (--paired-manifest, --source-manifest), which also
# derives the paired pipeline from train_pipeline (same crop and flip on both images of a pair,
# an independent jitter for each; zodi_core.seg.adapt).
custom_imports = dict(imports=["zodi_core.seg"], allow_failed_imports=False)
dataset_type = "ZoDiManifestDataset"
scale = (1024, 512)  # (W, H)
crop_size = (384, 768)  # (H, W)
train_pipeline = [
    dict(type="LoadZoDiSample"),
    dict(type="Resize", scale=scale, keep_ratio=False),
    dict(type="RandomCrop", crop_size=crop_size, cat_max_ratio=1.0),
    dict(type="RandomFlip", prob=0.5),
    dict(type="ZoDiColorJitter", keys=("img",), brightness=0.5, contrast=0.5, saturation=0.5),
    dict(type="PackSegInputs"),
]
test_pipeline = [dict(type="LoadZoDiSample", scale=scale), dict(type="PackSegInputs")]
train_dataloader = dict(
    batch_size=4, num_workers=4, persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=True),
    dataset=dict(type=dataset_type, manifest="", pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(type=dataset_type, manifest="", pipeline=test_pipeline),
)
test_dataloader = val_dataloader
val_evaluator = dict(type="IoUMetric", iou_metrics=["mIoU"])
test_evaluator = val_evaluator
