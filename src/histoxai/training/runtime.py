"""Device and numeric precision choices for training and inference.

``precision: auto`` means bf16 autocast on CUDA (fp16 with loss scaling where bf16 is
unsupported) and fp32 on CPU: on the 2-core AMD EPYC (AVX-512 BF16, no AMX) this project
was developed on, bf16 autocast was slower or no faster for most small backbones and
cost accuracy (see ``benchmarks/bench_loader.py --precision``), so CPU runs use fp32
unless ``bf16`` is asked for explicitly.
"""

from __future__ import annotations

import contextlib

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
        return None
    if precision not in DTYPES:
        raise ValueError(f"train.precision={precision!r}: expected one of ['auto', *{list(DTYPES)}]")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("train.precision=fp16 needs CUDA; use bf16 or fp32 on CPU")
    return DTYPES[precision]


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed-precision context for ``dtype`` (a no-op for fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
