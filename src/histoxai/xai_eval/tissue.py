"""What the model relies on: the share of each method's positive relevance (the signed
rule of :mod:`histoxai.xai_eval.relevance`) that falls on each tissue class, overall
and binned by target value and by prediction error.

Tissue classes (:data:`TISSUE_CLASSES`) come from the phantom's masks, or for real
data without masks from colour deconvolution (Ruifrok & Johnston 2001,
``skimage.color.rgb2hed``): haematoxylin-rich pixels are nuclei, bright pixels are
air/background, the rest stroma/cytoplasm.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from histoxai.data.store import MASK_CLASSES
from histoxai.xai_eval.similarity import flat

TISSUE_CLASSES: tuple[str, ...] = ("nuclei", "stroma", "air", "distractor")
"""Labels of :func:`tissue_labels` (``distractor`` only exists with phantom masks)."""


def labels_from_masks(masks: np.ndarray | Tensor) -> Tensor:
    """Store masks (``MASK_CLASSES`` values) -> (B, H, W) long :data:`TISSUE_CLASSES` labels."""
    masks = torch.as_tensor(np.asarray(masks)).long()
    lut = torch.tensor([TISSUE_CLASSES.index(name) for name in MASK_CLASSES])
    if masks.numel() and (masks.min() < 0 or masks.max() >= len(MASK_CLASSES)):
        raise ValueError(
            f"mask labels must be 0..{len(MASK_CLASSES) - 1} ({MASK_CLASSES}), got {int(masks.max())}"
        )
    return lut[masks]


def labels_from_colour(
    images: np.ndarray, nuclei_threshold: float | None = None, air_brightness: float = 0.85
) -> Tensor:
    """Tissue labels of H&E patches by colour deconvolution, (B, H, W) long.

    Args:
        images: (B, H, W, 3) uint8 RGB.
        nuclei_threshold: haematoxylin optical-density threshold; None = Otsu's threshold
            over all non-air pixels of the batch.
        air_brightness: pixels whose mean RGB (in [0, 1]) exceeds this are air/background.
    """
    from skimage.filters import threshold_otsu

    from histoxai.stain import haematoxylin

    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"colour labelling needs (B, H, W, 3) RGB patches, got {images.shape}")
    rgb = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
    haem = haematoxylin(rgb)
    air = rgb.mean(axis=-1) > air_brightness
    if nuclei_threshold is None:
        tissue = haem[~air]
        nuclei_threshold = float(threshold_otsu(tissue)) if tissue.size and np.ptp(tissue) > 0 else np.inf
    labels = np.full(images.shape[:3], TISSUE_CLASSES.index("stroma"), dtype=np.int64)
    labels[(haem > nuclei_threshold) & ~air] = TISSUE_CLASSES.index("nuclei")
    labels[air] = TISSUE_CLASSES.index("air")
    return torch.from_numpy(labels)


def class_shares(maps: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Positive attribution share and area share of each tissue class.

    Args:
        maps: (B, H, W) raw maps.
        labels: (B, H, W) :data:`TISSUE_CLASSES` labels.

    Returns:
        (attribution, area): (B, C) float64 CPU tensors; attribution rows sum to 1 (a
        map without positive mass counts as uniform: its row is the area row), area rows
        are the class pixel fractions.
    """
    pos = flat(maps).clamp_min(0.0)
    onehot = torch.nn.functional.one_hot(
        labels.reshape(len(labels), -1).long().to(pos.device), len(TISSUE_CLASSES)
    )
    onehot = onehot.double()  # (B, N, C)
    mass = torch.einsum("bn,bnc->bc", pos, onehot)
    total = mass.sum(dim=1, keepdim=True)
    area = onehot.mean(dim=1)
    share = torch.where(total > 0, mass / total.clamp_min(1e-300), area)
    return share.cpu(), area.cpu()


def binned_shares(shares: np.ndarray, by: np.ndarray, n_bins: int = 4, label: str = "bin") -> pd.DataFrame:
    """Mean attribution share per tissue class within quantile bins of ``by``.

    Args:
        shares: (B, C) attribution shares (:func:`class_shares`).
        by: (B,) binning variable (target value, |Δ|); NaN rows are dropped.
        n_bins: number of quantile bins (fewer when values repeat).
        label: name of the bin column.

    Returns:
        One row per bin: ``label`` (interval text), ``n``, ``lo``, ``hi`` and one column
        per tissue class.
    """
    by = np.asarray(by, dtype=np.float64)
    keep = np.isfinite(by)
    if not keep.any():
        return pd.DataFrame(columns=[label, "n", "lo", "hi", *TISSUE_CLASSES])
    frame = pd.DataFrame(np.asarray(shares)[keep], columns=list(TISSUE_CLASSES))
    bins = pd.qcut(by[keep], q=min(n_bins, int(np.unique(by[keep]).size)), duplicates="drop")
    frame["_bin"] = bins
    rows = []
    for interval, group in frame.groupby("_bin", observed=True):
        rows.append(
            {
                label: f"[{interval.left:.3g}, {interval.right:.3g}]",
                "n": len(group),
                "lo": float(interval.left),
                "hi": float(interval.right),
                **{c: float(group[c].mean()) for c in TISSUE_CLASSES},
            }
        )
    return pd.DataFrame(rows)
