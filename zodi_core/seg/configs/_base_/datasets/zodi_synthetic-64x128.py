# The demo's synthetic data at 1/8 of the paper's resolution: resize to 64x128, crop 48x96
# (the paper's 384x768 / 512x1024 ratio), batch 2, no worker processes (fast start on CPU).
_base_ = ["./zodi_cityscapes-512x1024.py"]
scale = (128, 64)  # (W, H)
crop_size = (48, 96)  # (H, W)
train_pipeline = _base_.train_pipeline  # LoadZoDiSample, Resize, RandomCrop, ...
train_pipeline[1].scale = scale
train_pipeline[2].crop_size = crop_size
test_pipeline = _base_.test_pipeline
test_pipeline[0].scale = scale
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False, dataset=dict(pipeline=train_pipeline)
)
val_dataloader = dict(num_workers=0, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
