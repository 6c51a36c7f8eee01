# The demo schedule: the paper's optimiser and decay over a few short epochs (CPU, ~1 minute).
_base_ = ["./schedule_100e.py"]
max_epochs = 50
optimizer = dict(lr=5e-2)
optim_wrapper = dict(optimizer=optimizer)
param_scheduler = [
    dict(
        type="PolyLR",
        eta_min=0.0,
        power=0.9,
        begin=0,
        end=max_epochs,
        by_epoch=True,
        convert_to_iter_based=True,
    )
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=10))
