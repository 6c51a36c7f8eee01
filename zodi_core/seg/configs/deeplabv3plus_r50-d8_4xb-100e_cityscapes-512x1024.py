# MMSegmentation's stock DeepLabv3+ R-50-D8 (ResNetV1c, dilated,
# output stride 8, ASPP rates 12/24/36, auxiliary FCN head) on the paper's data and schedule.
_base_ = ["mmseg::_base_/models/deeplabv3plus_r50-d8.py", "./_base_/zodi_cityscapes-512x1024_100e.py"]
data_preprocessor = dict(size=_base_.crop_size)
model = dict(data_preprocessor=data_preprocessor)
