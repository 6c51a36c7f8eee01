# MMSegmentation's stock DeepLabv3+ R-50-D8 (ResNetV1c, dilated,
# output stride 8, ASPP rates 12/24/36, auxiliary FCN head) on the paper's data and schedule.
_base_ = [
    "mmseg::_base_/models/deeplabv3plus_r50-d8.py",
    "./_base_/datasets/zodi_cityscapes-512x1024.py",
    "./_base_/default_runtime.py",
    "./_base_/schedules/schedule_100e.py",
]
crop_size = (384, 768)
data_preprocessor = dict(size=crop_size)
model = dict(data_preprocessor=data_preprocessor)
