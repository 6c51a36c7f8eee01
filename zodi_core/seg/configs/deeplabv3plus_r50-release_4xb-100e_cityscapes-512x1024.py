# The release's DeepLabv3+ R-50 on the paper's data and schedule (SPEC §3). `zodi train` adds ZoDi
# in code from TrainConfig (scheme, λ, feature stage); --source-only trains it as is (SPEC §5 row 1).
_base_ = ["./_base_/models/deeplabv3plus_r50-release.py", "./_base_/zodi_cityscapes-512x1024_100e.py"]
data_preprocessor = dict(size=_base_.crop_size)
model = dict(data_preprocessor=data_preprocessor)
