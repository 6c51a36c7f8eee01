"""The one device and precision switch of transfer, training and evaluation
(:func:`resolve_device`), and the kernels that change speed, not results (:func:`speed_levers`).

Torch is imported inside the functions: import-time cost only (the CLI and tasks import this).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def resolve_device(
    device: str = "auto", dtype: str = "auto", *, auto_half: bool = True
) -> tuple[torch.device, torch.dtype]:
    """``(torch.device, torch.dtype)`` for a stage's ``device`` ('auto', 'cpu', 'cuda',
    'cuda:N'; auto: CUDA when available) and ``dtype`` (``config.Dtype``: the configs check
    it). ``auto_half``: True for the sampler ('auto' is float16 on CUDA), False for
    training and evaluation ('auto' is float32; half means mixed precision, CUDA only).
    """
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = None
    with contextlib.suppress(RuntimeError, TypeError):
        dev = torch.device(device)
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', received {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device: {device!r} asked for, but no CUDA device is available "
            f"(this torch build or machine has no GPU); use --device cpu"
        )
    n = torch.cuda.device_count()
    if dev.type == "cuda" and dev.index is not None and dev.index >= n:
        raise ValueError(f"device: {device!r} asked for, but only {n} CUDA device(s) exist")
    auto = "float16" if dev.type == "cuda" and auto_half else "float32"
    dt = getattr(torch, auto if dtype == "auto" else dtype)
    if dev.type == "cpu" and dt != torch.float32 and not auto_half:
        raise ValueError(
            f"dtype: {dtype!r} on CPU is not supported for training and evaluation; use float32"
        )
    return dev, dt


#: ``TransferConfig.sdpa_backend`` values → ``torch.nn.attention.SDPBackend`` member names.
SDPA_BACKENDS = {
    "math": "MATH",
    "flash": "FLASH_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
    "cudnn": "CUDNN_ATTENTION",
}


def attention_kernel(sdpa_backend: str = "auto") -> contextlib.AbstractContextManager:
    """A context in which scaled-dot-product attention runs through ``sdpa_backend`` alone
    ('auto': torch's choice; or a key of :data:`SDPA_BACKENDS`)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if sdpa_backend == "auto":
        return contextlib.nullcontext()
    if sdpa_backend not in SDPA_BACKENDS:
        raise ValueError(
            f"sdpa_backend: expected 'auto' or one of {sorted(SDPA_BACKENDS)}, "
            f"received {sdpa_backend!r}"
        )
    return sdpa_kernel(getattr(SDPBackend, SDPA_BACKENDS[sdpa_backend]))


@contextlib.contextmanager
def speed_levers(
    device: torch.device,
    *,
    sdpa_backend: str = "auto",
    cudnn_benchmark: bool = False,
    tf32: bool = False,
) -> Iterator[None]:
    """Inside the block: the attention kernel (:func:`attention_kernel`), cuDNN autotuning
    (CUDA only) and TF32 for float32 matmuls and convolutions asked for; the previous
    process-wide settings come back after it."""
    import torch

    cudnn = torch.backends.cudnn
    with contextlib.ExitStack() as stack:  # (its callbacks restore the settings, last first)
        stack.enter_context(attention_kernel(sdpa_backend))
        stack.callback(torch.set_float32_matmul_precision, torch.get_float32_matmul_precision())
        stack.callback(setattr, cudnn, "allow_tf32", cudnn.allow_tf32)
        stack.callback(setattr, cudnn, "benchmark", cudnn.benchmark)
        # not the fp32_precision attributes: torch refuses to read its legacy TF32 flags
        # (as compilers and libraries do) once those were set
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
        cudnn.allow_tf32 = tf32
        if device.type == "cuda":
            cudnn.benchmark = cudnn_benchmark
        yield
