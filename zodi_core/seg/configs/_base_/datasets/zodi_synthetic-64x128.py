# The demo's synthetic data at 1/8 of the paper's resolution: resize to 64x128, crop 48x96
# (the paper's 384x768 / 512x1024 ratio), batch 2, no worker processes (fast start on CPU).
_base_ = ["./zodi_cityscapes-512x1024.py"]
scale = (128, 64)  # (W, H)
crop_size = (48, 96)  # (H, W)
jitter = dict(brightness=0.5, contrast=0.5, saturation=0.5)
geometric_transforms = [
    dict(type="Resize", scale=scale, keep_ratio=False),
    dict(type="RandomCrop", crop_size=crop_size, cat_max_ratio=1.0),
    dict(type="RandomFlip", prob=0.5),
]
train_pipeline = [
    dict(type="LoadZoDiSample"),
    *geometric_transforms,
    dict(type="ZoDiColorJitter", keys=("img",), **jitter),
    dict(type="PackSegInputs"),
]
test_pipeline = [
    dict(type="LoadZoDiSample", scale=scale),
    dict(type="PackSegInputs"),
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False, dataset=dict(pipeline=train_pipeline)
)
val_dataloader = dict(num_workers=0, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
