"""Classical nuclei detection on H&E: haematoxylin channel, threshold, watershed.

Used for the ``cc`` (cell count) target when no QuPath export is available. Steps:

1. Colour deconvolution to haematoxylin optical density (Ruifrok & Johnston 2001,
   ``skimage.color.rgb2hed``).
2. Threshold: Otsu on the haematoxylin channel, but never below ``min_threshold`` so a
   patch without nuclei does not turn its stroma into "nuclei".
3. Split touching nuclei: peaks of the distance transform seed a watershed on the
   negated distance (the usual marker-controlled watershed).
4. Drop objects smaller than ``min_area_um2``.

Sizes are given in µm and converted with ``um_per_px``.

Example:
    >>> centroids = detect_nuclei(rgb, um_per_px=0.5)  # (N, 2) row, col
    >>> n = count_nuclei(rgb, um_per_px=0.5, core=(slice(16, 416), slice(16, 416)))
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.segmentation import watershed

from histoxai.stain import haematoxylin

MIN_THRESHOLD = 0.05
"""Lowest haematoxylin level (``rgb2hed`` units) counted as nucleus; eosin stroma is ~0.0–0.02,
nuclei ~0.08–0.15."""

MIN_AREA_UM2 = 8.0
"""Smallest nucleus kept (about 3 µm across)."""

MIN_DISTANCE_UM = 2.5
"""Smallest distance between two nucleus centres (watershed seeds)."""

HALO_UM = 8.0
"""Context around a region so nuclei cut by its border are seen whole (about one nucleus)."""


def hematoxylin(rgb: np.ndarray) -> np.ndarray:
    """Haematoxylin optical density of an (H, W, 3) RGB image, (H, W) float32."""
    if rgb.ndim != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    return haematoxylin(rgb)


def detect_nuclei(
    rgb: np.ndarray,
    um_per_px: float = 0.5,
    min_threshold: float = MIN_THRESHOLD,
    min_area_um2: float = MIN_AREA_UM2,
    min_distance_um: float = MIN_DISTANCE_UM,
) -> np.ndarray:
    """Centroids of the nuclei in an H&E image.

    Args:
        rgb: (H, W, 3) uint8 image.
        um_per_px: pixel size, to convert the µm sizes below.
        min_threshold: lowest haematoxylin level counted as nucleus.
        min_area_um2: smallest object kept.
        min_distance_um: smallest distance between two nucleus centres.

    Returns:
        (N, 2) float array of centroids (row, col) in pixels of ``rgb``.
    """
    h = hematoxylin(rgb)
    level = max(float(threshold_otsu(h)) if np.ptp(h) > 0 else np.inf, min_threshold)
    mask = h > level
    if not mask.any():
        return np.zeros((0, 2))
    distance = ndi.distance_transform_edt(mask)  # (H, W) px to background
    blobs, _ = ndi.label(mask)
    min_distance = max(1, int(round(min_distance_um / um_per_px)))
    peaks = peak_local_max(distance, min_distance=min_distance, labels=blobs, exclude_border=False)
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # A plateau gives several adjacent peaks; merge seeds that touch.
    markers, n = ndi.label(ndi.binary_dilation(markers > 0) & mask)
    labels = watershed(-distance, markers, mask=mask)
    index = np.arange(1, n + 1)
    areas = ndi.sum_labels(np.ones_like(labels), labels, index) * um_per_px**2
    centroids = np.array(ndi.center_of_mass(mask, labels, index)).reshape(-1, 2)
    return centroids[areas >= min_area_um2]


def count_nuclei(
    rgb: np.ndarray, um_per_px: float = 0.5, core: tuple[slice, slice] | None = None, **params: float
) -> int:
    """Number of nuclei whose centroid lies in ``core`` (default: the whole image).

    Pass an image with a halo around the region of interest and ``core`` selecting the
    region, so nuclei cut by the region's border are detected whole and counted once.
    """
    centroids = detect_nuclei(rgb, um_per_px, **params)
    if core is None:
        return len(centroids)
    r, c = centroids[:, 0], centroids[:, 1]
    rows, cols = core
    inside = (r >= rows.start) & (r < rows.stop) & (c >= cols.start) & (c < cols.stop)
    return int(inside.sum())
