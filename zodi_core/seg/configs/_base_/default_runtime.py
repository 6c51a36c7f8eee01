# Runtime shared by every ZoDi config: mmseg's default runtime, logged per epoch. No fixed
# visualizer `name`: each Runner then gets its own (named after the experiment), so several runs
# in one process (tests, a flow) log to their own work dirs.
_base_ = ["mmseg::_base_/default_runtime.py"]
visualizer = dict(_delete_=True, type="SegLocalVisualizer", vis_backends=_base_.vis_backends)
log_processor = dict(by_epoch=True)
