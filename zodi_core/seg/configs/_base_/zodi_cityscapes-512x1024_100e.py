# The paper's data, runtime and schedule (§4.1); a leaf config adds the model.
_base_ = ["./datasets/zodi_cityscapes-512x1024.py", "./default_runtime.py", "./schedules/schedule_100e.py"]
