# Demo model: tiny ResNet-18 DeepLabv3+ on synthetic data, CPU, about a minute. `zodi train`
# adds ZoDi (TrainConfig's scheme, λ, feature stage) unless --source-only.
_base_ = [
    "./_base_/models/deeplabv3plus_r18-tiny.py",
    "./_base_/datasets/zodi_synthetic-64x128.py",
    "./_base_/default_runtime.py",
    "./_base_/schedules/schedule_demo.py",
]
data_preprocessor = dict(size=_base_.crop_size)
model = dict(data_preprocessor=data_preprocessor)
env_cfg = dict(cudnn_benchmark=False)
