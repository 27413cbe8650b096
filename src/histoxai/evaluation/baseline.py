"""The classical baseline of the earlier study: a polynomial in cell density and image
anisotropy, fitted on the training split and evaluated on the same splits as the CNN.

Features per patch:

- ``density``: nuclei per mm² of patch (per 10⁶ px² when the store card gives no
  pixel size). Counts come from the classical detector
  (``histoxai.data.nuclei.count_nuclei``) when it is installed, else from the store's
  ``cc`` column (``density_source``). With ``cc`` the baseline of the ``cc`` target is
  the identity, not a fair comparison.
- ``coherence``: coherence (λ1 - λ2) / (λ1 + λ2) of the gradient structure tensor
  averaged over the whole patch (Bigün & Granlund 1987; Jähne, *Digital Image
  Processing*, eq. 13.8), from Gaussian-derivative gradients of the grayscale or
  haematoxylin channel. 0 for isotropic texture, 1 for parallel stripes.

Example:
    >>> pred = baseline_predictions(PatchStore("data/patches"), "random", ["md", "fa"], degree=2)
    >>> pred[["split", "y_md", "yhat_md"]].head()
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage
from tqdm.auto import tqdm

from histoxai.data.store import PatchStore, split_column
from histoxai.stain import haematoxylin

DENSITY_SOURCES: tuple[str, ...] = ("auto", "detector", "cc")


def to_gray(images: np.ndarray) -> np.ndarray:
    """(B, H, W, 3) uint8 RGB → (B, H, W) float luminance in [0, 1] (ITU-R BT.601)."""
    return images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32) / 255.0


def to_haematoxylin(images: np.ndarray) -> np.ndarray:
    """(B, H, W, 3) uint8 RGB → (B, H, W) haematoxylin optical density (Ruifrok & Johnston 2001)."""
    return haematoxylin(images)


CHANNELS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"gray": to_gray, "haematoxylin": to_haematoxylin}


def structure_tensor_coherence(channel: np.ndarray, sigma_px: float = 1.0) -> np.ndarray:
    """Coherence of the structure tensor averaged over each patch.

    Args:
        channel: (B, H, W) float intensities.
        sigma_px: scale of the Gaussian-derivative gradients, in pixels.

    Returns:
        (B,) coherence in [0, 1]; 0 for flat patches.
    """
    channel = np.asarray(channel, dtype=np.float32)
    # Derivatives along rows (y) and columns (x) only, never across patches (axis 0).
    iy = ndimage.gaussian_filter(channel, sigma=(0, sigma_px, sigma_px), order=(0, 1, 0), mode="reflect")
    ix = ndimage.gaussian_filter(channel, sigma=(0, sigma_px, sigma_px), order=(0, 0, 1), mode="reflect")
    jxx = np.mean(ix * ix, axis=(1, 2), dtype=np.float64)  # (B,)
    jyy = np.mean(iy * iy, axis=(1, 2), dtype=np.float64)
    jxy = np.mean(ix * iy, axis=(1, 2), dtype=np.float64)
    trace = jxx + jyy  # λ1 + λ2
    diff = np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2)  # λ1 - λ2
    return np.divide(diff, trace, out=np.zeros_like(trace), where=trace > 1e-12)


def _detector() -> Callable | None:
    try:
        module = importlib.import_module("histoxai.data.nuclei")
    except ImportError:
        return None
    return getattr(module, "count_nuclei", None)


def pixel_size_um(card: dict) -> float | None:
    """µm per pixel from a store card (``um_per_px``, ``params.um_per_px`` or ``voxel_um``)."""
    params = card.get("params") if isinstance(card.get("params"), dict) else {}
    um = card.get("um_per_px") or params.get("um_per_px")
    if not um and card.get("voxel_um") and card.get("patch_size_px"):
        um = float(card["voxel_um"]) / float(card["patch_size_px"])
    return float(um) if um else None


def nuclei_counts(
    store: PatchStore, ids: np.ndarray, source: str = "auto", batch: int = 512
) -> tuple[np.ndarray, str]:
    """Nuclei per patch for ``ids`` and the source used (``"detector"`` or ``"cc"``).

    ``"auto"`` uses the classical detector when ``histoxai.data.nuclei`` provides
    ``count_nuclei(rgb, um_per_px)``, else the store's ``cc`` column.
    """
    if source not in DENSITY_SOURCES:
        raise ValueError(f"density source {source!r}: expected one of {DENSITY_SOURCES}")
    count = _detector() if source in ("auto", "detector") else None
    if count is None:
        if source == "detector":
            raise ValueError("density source 'detector': histoxai.data.nuclei.count_nuclei is not available")
        cc = store.index["cc"].to_numpy(np.float64)[ids]
        if not np.isfinite(cc).any():
            raise ValueError(f"store {store.root} has no 'cc' values and no nuclei detector is available")
        return cc, "cc"
    um = pixel_size_um(store.card)
    kwargs = {"um_per_px": um} if um else {}
    counts = np.empty(len(ids), dtype=np.float64)
    for i in tqdm(range(0, len(ids), batch), desc="baseline: nuclei", leave=False):
        for j, rgb in enumerate(store.images(ids[i : i + batch])):
            counts[i + j] = count(rgb, **kwargs)
    return counts, "detector"


def baseline_features(
    store: PatchStore,
    ids: np.ndarray,
    sigma_px: float = 1.0,
    channel: str = "gray",
    density_source: str = "auto",
    batch: int = 512,
) -> tuple[pd.DataFrame, str]:
    """Per-patch ``density`` and ``coherence`` (see the module docstring).

    Returns:
        A frame indexed like ``ids`` with columns ``patch_id``, ``density``,
        ``coherence``, and the density source used.
    """
    if channel not in CHANNELS:
        raise ValueError(f"channel {channel!r}: expected one of {sorted(CHANNELS)}")
    ids = np.asarray(ids, dtype=np.int64)
    coherence = [
        structure_tensor_coherence(CHANNELS[channel](store.images(ids[i : i + batch])), sigma_px)
        for i in tqdm(range(0, len(ids), batch), desc="baseline: anisotropy", leave=False)
    ]
    counts, used = nuclei_counts(store, ids, density_source, batch)
    um = pixel_size_um(store.card)
    # mm² of one patch (or 10⁶ px² without a pixel size), so density is per mm².
    area = (store.patch_size * um) ** 2 / 1e6 if um else store.patch_size**2 / 1e6
    frame = pd.DataFrame(
        {
            "patch_id": ids,
            "density": counts / area,
            "coherence": np.concatenate(coherence) if coherence else np.zeros(0),
        }
    )
    return frame, used


@dataclass(frozen=True)
class PolynomialFit:
    """Least-squares polynomial in standardised features (all monomials up to ``degree``)."""

    mean: np.ndarray  # (F,)
    scale: np.ndarray  # (F,)
    powers: np.ndarray  # (K, F) exponents, row 0 the intercept
    coef: np.ndarray  # (K,)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(N, F) features → (N,) predictions."""
        return design_matrix((np.asarray(x, np.float64) - self.mean) / self.scale, self.powers) @ self.coef


def polynomial_powers(n_features: int, degree: int) -> np.ndarray:
    """(K, F) exponents of all monomials of total degree ≤ ``degree``, intercept first."""
    rows = [np.zeros(n_features, dtype=int)]
    for d in range(1, degree + 1):
        for combo in itertools.combinations_with_replacement(range(n_features), d):
            rows.append(np.bincount(combo, minlength=n_features))
    return np.stack(rows)


def design_matrix(x: np.ndarray, powers: np.ndarray) -> np.ndarray:
    """(N, F) features and (K, F) exponents → (N, K) monomials."""
    return np.prod(x[:, None, :] ** powers[None, :, :], axis=2)


def fit_polynomial(x: np.ndarray, y: np.ndarray, degree: int) -> PolynomialFit:
    """Fit ``y ≈ poly(x)`` by least squares over rows with finite ``x`` and ``y``.

    Args:
        x: (N, F) features.
        y: (N,) targets.
        degree: total degree (1: linear, 2: quadratic with interactions).
    """
    if degree < 1:
        raise ValueError(f"polynomial degree must be >= 1, got {degree}")
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(x).all(axis=1) & np.isfinite(y)
    powers = polynomial_powers(x.shape[1], degree)
    if ok.sum() < len(powers):
        raise ValueError(
            f"polynomial of degree {degree} needs >= {len(powers)} training rows, got {int(ok.sum())}"
        )
    mean, scale = x[ok].mean(axis=0), x[ok].std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    coef, *_ = np.linalg.lstsq(design_matrix((x[ok] - mean) / scale, powers), y[ok], rcond=None)
    return PolynomialFit(mean, scale, powers, coef)


def baseline_predictions(
    store: PatchStore,
    scheme: str,
    targets: Sequence[str],
    degree: int = 2,
    sigma_px: float = 1.0,
    channel: str = "gray",
    density_source: str = "auto",
) -> pd.DataFrame:
    """Fit the baseline on the ``train`` patches of ``scheme`` and predict every patch.

    Returns:
        One row per patch: ``patch_id``, ``sample``, ``row``, ``col``, ``split``,
        ``density``, ``coherence`` and per target ``y_<t>``, ``yhat_<t>`` (NaN for a
        target without training values). ``attrs["density_source"]`` says where the
        nuclei counts came from.
    """
    index = store.index
    ids = index["patch_id"].to_numpy(np.int64)
    features, used = baseline_features(store, ids, sigma_px, channel, density_source)
    out = index[["patch_id", "sample", "row", "col"]].copy()
    out["split"] = index[split_column(scheme)].to_numpy()
    out["density"] = features["density"].to_numpy()
    out["coherence"] = features["coherence"].to_numpy()
    x = out[["density", "coherence"]].to_numpy()
    train = (out["split"] == "train").to_numpy()
    for t in targets:
        if t not in index:
            raise ValueError(f"store {store.root} has no target column {t!r}")
        y = index[t].to_numpy(np.float64)
        out[f"y_{t}"] = y
        if np.isfinite(y[train]).any():
            out[f"yhat_{t}"] = fit_polynomial(x[train], y[train], degree).predict(x)
        else:
            out[f"yhat_{t}"] = np.nan
    out.attrs["density_source"] = used
    return out


def sample_mean_predictions(pred: pd.DataFrame, targets: Sequence[str]) -> pd.DataFrame:
    """The sample-mean shortcut: each patch predicted by its sample's mean over that
    sample's ``train`` patches (the pooled ``train`` mean for a sample without any).

    What recognising the sample, and nothing about the tissue, already explains: its
    within-sample R² is 0 by construction. Needs no images: ``pred`` is a predictions frame
    (``patch_id, sample, row, col, split, y_<t>``); ``yhat_<t>`` columns are replaced.

    Returns:
        ``patch_id, sample, row, col, split`` and ``y_<t>``, ``yhat_<t>`` per target.
    """
    out = pred[["patch_id", "sample", "row", "col", "split"]].copy()
    train = (pred["split"] == "train").to_numpy()
    for t in targets:
        y = pred[f"y_{t}"].to_numpy(np.float64)
        known = train & np.isfinite(y)
        means = pd.Series(y[known]).groupby(pred["sample"].to_numpy()[known]).mean()
        pooled = float(y[known].mean()) if known.any() else np.nan
        out[f"y_{t}"] = y
        out[f"yhat_{t}"] = pred["sample"].map(means).fillna(pooled).to_numpy(np.float64)
    return out
