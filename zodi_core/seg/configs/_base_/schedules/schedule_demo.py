# The demo schedule: the paper's optimiser and decay over a few short epochs (CPU, ~1 minute).
_base_ = ["./schedule_100e.py"]
max_epochs = 50
optimizer = dict(lr=5e-2)
optim_wrapper = dict(optimizer=optimizer)
param_scheduler = _base_.param_scheduler
param_scheduler[0].end = max_epochs
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=10))
