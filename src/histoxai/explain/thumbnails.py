"""Display-size thumbnails of saliency maps, written beside the maps by the store.

The dashboard shows a map at most :data:`THUMB_PX` pixels wide (its largest tile), so a map
larger than that is reduced by an integer factor (block mean) before it is coloured. The
store keeps the reduced values of each map as two planes, ``shrink(|v|)`` and ``shrink(v)``
(float16, in the map's stored units: multiply by its per-map scale), from which every sign
the dashboard shows follows exactly, the block mean being linear:
``abs = A``, ``signed = S``, ``pos = (A + S) / 2``, ``neg = (A − S) / 2``.
A cold dashboard page then reads and colours a quarter of the pixels (at 256 or 360 px)
instead of reducing every full-size map per request.
"""

from __future__ import annotations

import numpy as np

THUMB_PX = 224
"""Thumbnails (and every image the dashboard serves) are at most this many pixels wide."""


def shrink(x: np.ndarray, limit: int = THUMB_PX) -> np.ndarray:
    """``x`` (H, W[, C]) reduced by an integer factor (block mean) to at most ``limit`` px wide."""
    f = -(-x.shape[0] // limit)
    if f <= 1:
        return x
    h, w = x.shape[0] // f * f, x.shape[1] // f * f
    out = np.zeros((h // f, w // f, *x.shape[2:]), dtype=np.float32)
    for i in range(f):  # f*f strided adds: several times faster than a mean over reshaped axes
        for j in range(f):
            out += x[i:h:f, j:w:f]
    out *= 1.0 / (f * f)
    return (out + 0.5).astype(np.uint8) if x.dtype == np.uint8 else out


def served_size(size: int, limit: int = THUMB_PX) -> int:
    """Side of an image of ``size`` px once reduced by :func:`shrink`."""
    return size // -(-size // limit)


def has_thumbnails(shape: tuple[int, ...]) -> bool:
    """Whether maps of ``shape`` (N, H, W) get thumbnails (only those larger than served)."""
    return len(shape) == 3 and shape[1] > THUMB_PX


def thumbnail_shape(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(N, 2, h, w) shape of the thumbnails of maps of ``shape`` (N, H, W)."""
    f = -(-shape[1] // THUMB_PX)
    return (shape[0], 2, shape[1] // f, shape[2] // f)


def thumbnails(stored: np.ndarray) -> np.ndarray:
    """(B, 2, h, w) float16 planes ``shrink(|v|)``, ``shrink(v)`` of stored maps (B, H, W)."""
    v = np.asarray(stored, dtype=np.float32)
    out = np.empty(thumbnail_shape(v.shape), dtype=np.float16)
    for i, m in enumerate(v):
        out[i, 0] = shrink(np.abs(m))
        out[i, 1] = shrink(m)
    return out


def shown(planes: np.ndarray, sign: str) -> np.ndarray:
    """(h, w) float32 values ``sign`` shows from one map's planes (2, h, w): magnitudes for
    ``abs``/``pos``/``neg``, signed values for ``signed``."""
    a = planes[0].astype(np.float32)
    if sign == "abs":
        return a
    s = planes[1].astype(np.float32)
    if sign == "signed":
        return s
    if sign == "pos":
        return np.maximum((a + s) * 0.5, 0.0)
    if sign == "neg":
        return np.maximum((a - s) * 0.5, 0.0)
    raise KeyError(f"unknown sign {sign!r}; expected abs, pos, neg or signed")
