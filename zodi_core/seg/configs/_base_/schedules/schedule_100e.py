# The paper's schedule (§4.1): SGD lr 1e-3, momentum 0.9, weight decay 1e-4, polynomial decay
# (power 0.9) per iteration, 100 epochs; a checkpoint every epoch (a crash loses at most one).
optimizer = dict(type="SGD", lr=1e-3, momentum=0.9, weight_decay=1e-4)
optim_wrapper = dict(type="OptimWrapper", optimizer=optimizer, clip_grad=None)
param_scheduler = [
    dict(type="PolyLR", eta_min=0.0, power=0.9, begin=0, end=100, by_epoch=True,
         convert_to_iter_based=True)
]
train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=100, val_interval=10)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=50, log_metric_by_epoch=True),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(type="CheckpointHook", by_epoch=True, interval=1, max_keep_ckpts=2, save_last=True),
    sampler_seed=dict(type="DistSamplerSeedHook"),
    visualization=dict(type="SegVisualizationHook"),
)
