"""Device and numeric precision choices for training and inference.

``precision: auto`` means bf16 autocast on CUDA (fp16 with loss scaling where bf16 is
unsupported), and on a CPU bf16 autocast where the CPU computes bf16 natively
(AVX512-BF16 or AMX), else fp32. Measured with ``benchmarks/bench_loader.py`` on the
2-core AMD EPYC (AVX512-BF16) this project was developed on, 64 px, batch 64, one thread:
ResNet-type backbones train 1.4-1.7x faster in bf16 (test_resnet 313 -> 442 images/s,
resnet10t 73 -> 123) at the same test R²; MobileNetV3 and EfficientNet were slower in
bf16 there, so choose ``fp32`` explicitly for those.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU. ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda but no CUDA device is available; use train.device=auto or cpu")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None: plain fp32)."""
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else None
    if precision not in DTYPES:
        raise ValueError(f"train.precision={precision!r}: expected one of ['auto', *{list(DTYPES)}]")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("train.precision=fp16 needs CUDA; use bf16 or fp32 on CPU")
    return DTYPES[precision]


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True where oneDNN runs bf16 on native instructions (AVX512-BF16 or AMX), not emulated."""
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
        flags = Path("/proc/cpuinfo").read_text().split()
    except (AttributeError, RuntimeError, OSError):
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed-precision context for ``dtype`` (a no-op for fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
