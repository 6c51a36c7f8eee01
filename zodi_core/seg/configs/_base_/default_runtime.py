# Runtime shared by every ZoDi config (mmseg's default runtime, logged per epoch).
default_scope = "mmseg"
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
    dist_cfg=dict(backend="nccl"),
)
vis_backends = [dict(type="LocalVisBackend")]
# No fixed `name`: each Runner then gets its own visualizer (named after the experiment), so
# several runs in one process (tests, a flow) log to their own work dirs.
visualizer = dict(type="SegLocalVisualizer", vis_backends=vis_backends)
log_processor = dict(by_epoch=True)
log_level = "INFO"
load_from = None
resume = False
