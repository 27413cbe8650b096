"""The MICROMEN per-voxel baseline, done as the published analysis did it.

Brabec et al. 2023 (NeuroImage: Clinical 37, 103365) predict MD from cell density and
in-plane FA from structure anisotropy, per voxel of the 200 µm MR grid, with the maps of
``summary.mat`` (their repository ``jan-brabec/microimaging_vs_histology_in_meningeomas``,
``Step_e_Manuscript_figures``). Their steps, reproduced here:

- ``process_map``: NaN → 0, multiply by the ROI (``sROI``), and for the histology maps
  (cell density ``sCD``, normalised to 0..1 per sample, and structure anisotropy
  ``sHd.dSA``) a Gaussian smoothing with σ = 0.5 voxel (``fspecial('gaussian', 5, 0.5)``
  applied by ``imfilter``: correlation, zero padding). MR maps are not smoothed.
- Per tumour (``predict_map`` mode 1101): ROI voxels split at random 80 / 20, a quadratic
  y ≈ c + a x² + b x fitted by least squares on the 80 %, R² on the 20 %, repeated 10
  times; the tumour's value is the median over repeats, and the summary the median over
  the 16 tumours.
- Across tumours (``Fig_3_5_per_tumor_MD_FAIP.m``): the squared Pearson correlation of the
  tumours' ROI means (cell density vs MD, structure anisotropy vs in-plane FA).
- The published per-tumour CNNs (``sMD_CNN``, ``sFAIP_CNN``): R² of their test voxels.

R² is reported both ways: ``r2`` = 1 − SS_res / SS_tot (coefficient of determination, the
article's ``calc_R2``) and ``ev`` = 1 − var(y − ŷ) / var(y) (explained variance, the
thesis' Eq. 3.2). Random splits come from ``numpy.random.default_rng(seed)``, not MATLAB's
``randperm``, so per-tumour values differ from the article's draws within their spread.

Example:
    >>> result = per_voxel_baseline("../shared/data/micromen/summary.mat")
    >>> result.summary["per_tumour_median_r2_md"]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from histoxai.errors import InputError, MissingInputError
from histoxai.io import atomic_path

PUBLISHED: dict[str, float] = {
    "across_r2_md": 0.58,  # Brabec 2023: cell density explains MD across tumours
    "across_r2_faip": 0.82,  # Brabec 2023: structure anisotropy explains in-plane FA across tumours
    "cnn_median_r2_md": 0.31,  # per-tumour CNN test R², median (sMD_CNN)
    "cnn_median_r2_faip": 0.21,  # per-tumour CNN test R², median (sFAIP_CNN)
}
"""The article's numbers quoted beside the reproduction (issue 12 item 6)."""

FEATURES: dict[str, tuple[str, str]] = {"md": ("density", "MD"), "faip": ("anisotropy", "FAIP")}
"""Target -> (histology feature, MR map in ``sMR``)."""


def gaussian_kernel(sigma_vox: float) -> np.ndarray:
    """MATLAB ``fspecial('gaussian', 2 round(3σ) + 1, σ)``: normalised 2-D kernel."""
    radius = int(np.floor(3 * sigma_vox + 0.5))  # MATLAB round: half away from zero
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-(t**2) / (2 * sigma_vox**2))
    k = np.outer(g, g)
    return k / k.sum()


def process_map(x: np.ndarray, roi: np.ndarray, sigma_vox: float = 0.0) -> np.ndarray:
    """The article's ``process_map``: NaN → 0, × ROI, optional Gaussian smoothing (σ in voxels,
    zero padding as ``imfilter``), × ROI again. (R, C) float64."""
    inside = np.asarray(roi) > 0
    x = np.nan_to_num(np.asarray(x, dtype=np.float64)) * inside
    if sigma_vox > 0:
        x = ndimage.correlate(x, gaussian_kernel(sigma_vox), mode="constant", cval=0.0)
    return np.nan_to_num(x) * inside


def r2_score(y: np.ndarray, y_hat: np.ndarray) -> float:
    """Coefficient of determination 1 − SS_res / SS_tot."""
    return float(1 - np.sum((y - y_hat) ** 2) / np.sum((y - y.mean()) ** 2))


def ev_score(y: np.ndarray, y_hat: np.ndarray) -> float:
    """Explained variance 1 − var(y − ŷ) / var(y) (the thesis' Eq. 3.2)."""
    return float(1 - np.var(y - y_hat) / np.var(y))


def load_summary(path: str | Path) -> dict:
    """``summary.mat`` as ``scipy.io.loadmat`` gives it; a clear error if missing or incomplete."""
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise MissingInputError(
            f"MICROMEN summary {path} does not exist (expected ../shared/data/micromen/summary.mat "
            "or --summary PATH)"
        )
    try:
        data = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except (scipy.io.matlab.MatReadError, ValueError, OSError, NotImplementedError) as err:
        raise InputError(
            f"{path} is not a readable MATLAB file ({err}); expected the MICROMEN summary.mat"
        ) from None
    for name in ("sMR", "sCD", "sHd", "sROI"):
        if name not in data:
            raise InputError(f"{path}: no variable {name!r}; expected the MICROMEN summary.mat")
    return data


@dataclass(frozen=True)
class VoxelBaseline:
    """Per-tumour table (one row per sample) and the summary numbers."""

    per_tumour: pd.DataFrame
    summary: dict[str, float]


def quadratic_fit_test(
    x: np.ndarray, y: np.ndarray, rng: np.random.Generator, test_fraction: float
) -> tuple[float, float]:
    """One random split: fit c + a x² + b x on the training voxels; (r2, ev) on the test ones."""
    n = len(x)
    test = np.zeros(n, dtype=bool)
    test[rng.permutation(n)[: int(np.ceil(test_fraction * n))]] = True
    design = np.column_stack([np.ones(n), x**2, x])
    coef, *_ = np.linalg.lstsq(design[~test], y[~test], rcond=None)
    y_hat = design[test] @ coef
    return r2_score(y[test], y_hat), ev_score(y[test], y_hat)


def per_voxel_baseline(
    summary: str | Path | dict,
    sigma_vox: float = 0.5,
    repeats: int = 10,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> VoxelBaseline:
    """Reproduce the MICROMEN per-voxel analysis (see the module docstring).

    Args:
        summary: path of ``summary.mat`` or its loaded dict.
        sigma_vox: smoothing of the histology maps, in voxels (the article: 0.5).
        repeats: random 80/20 splits per tumour (the article: 10).
        test_fraction: share of ROI voxels tested per split (the article: 0.2).
        seed: seed of the splits.

    Returns:
        ``per_tumour``: ``sample``, ``n_voxels``, per target ``r2_<t>``, ``ev_<t>`` (medians
        over repeats), ``r2_<t>_iqr``, ``cnn_r2_<t>``, ``cnn_ev_<t>`` (published CNN's test
        voxels), and the tumour means ``density``, ``anisotropy``, ``md``, ``faip``, ``fa``;
        ``summary``: per-tumour medians and across-tumour R² (squared Pearson r of means).
    """
    data = summary if isinstance(summary, dict) else load_summary(summary)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(len(data["sMR"])):
        roi = np.asarray(data["sROI"][i]) > 0
        mr = data["sMR"][i]
        maps = {
            "density": process_map(data["sCD"][i], roi, sigma_vox),
            "anisotropy": process_map(data["sHd"][i].dSA, roi, sigma_vox),
            "MD": process_map(mr.MD, roi),
            "FAIP": process_map(mr.FAIP, roi),
            "FA": process_map(mr.FA, roi),
        }
        row: dict[str, float | str | int] = {"sample": f"s{i + 1}", "n_voxels": int(roi.sum())}
        for t, (feature, target) in FEATURES.items():
            x, y = maps[feature][roi], maps[target][roi]
            scores = np.array([quadratic_fit_test(x, y, rng, test_fraction) for _ in range(repeats)])
            row[f"r2_{t}"] = float(np.median(scores[:, 0]))
            row[f"ev_{t}"] = float(np.median(scores[:, 1]))
            q1, q3 = np.percentile(scores[:, 0], [25, 75])
            row[f"r2_{t}_iqr"] = float(q3 - q1)
            key = f"s{target}_CNN"  # the article's per-tumour CNN (sMD_CNN, sFAIP_CNN)
            if key in data:
                cnn = data[key][i]
                m, p = (np.asarray(v, np.float64).ravel() for v in (cnn.measured, cnn.predicted))
                ok = np.isfinite(m) & np.isfinite(p)
                row[f"cnn_r2_{t}"], row[f"cnn_ev_{t}"] = r2_score(m[ok], p[ok]), ev_score(m[ok], p[ok])
        row.update(
            density=maps["density"][roi].mean(),
            anisotropy=maps["anisotropy"][roi].mean(),
            md=maps["MD"][roi].mean(),
            faip=maps["FAIP"][roi].mean(),
            fa=maps["FA"][roi].mean(),
        )
        rows.append(row)
    table = pd.DataFrame(rows)
    out: dict[str, float] = {
        "across_r2_md": float(np.corrcoef(table["density"], table["md"])[0, 1] ** 2),
        "across_r2_faip": float(np.corrcoef(table["anisotropy"], table["faip"])[0, 1] ** 2),
        "across_r2_fa": float(np.corrcoef(table["anisotropy"], table["fa"])[0, 1] ** 2),
    }
    for t in FEATURES:
        out[f"per_tumour_median_r2_{t}"] = float(table[f"r2_{t}"].median())
        out[f"per_tumour_median_ev_{t}"] = float(table[f"ev_{t}"].median())
        if f"cnn_r2_{t}" in table:
            out[f"cnn_median_r2_{t}"] = float(table[f"cnn_r2_{t}"].median())
            out[f"cnn_median_ev_{t}"] = float(table[f"cnn_ev_{t}"].median())
    return VoxelBaseline(table, out)


def write_voxel_baseline(result: VoxelBaseline, out_dir: str | Path, settings: dict | None = None) -> Path:
    """Write ``report.md``, ``per_tumour.csv`` and ``summary.json`` (each atomically)."""
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "per_tumour.csv") as tmp:
        result.per_tumour.to_csv(tmp, index=False, float_format="%.4f")
    with atomic_path(out / "summary.json") as tmp:
        Path(tmp).write_text(json.dumps({**result.summary, "settings": settings or {}}, indent=2))
    s = result.summary
    lines = [
        "# MICROMEN per-voxel baseline (Brabec et al. 2023, reproduced)",
        "",
        "Histology maps smoothed (Gaussian, σ in voxels), one quadratic fit per tumour on the",
        "per-sample-normalised cell density (MD) or structure anisotropy (in-plane FA), 80/20",
        "random voxel splits; across tumours the squared Pearson r of the tumour means.",
        f"Settings: {settings or {}}.",
        "",
        "| quantity | reproduced | published |",
        "| --- | --- | --- |",
        f"| across tumours, cell density → MD, R² | {s['across_r2_md']:.3f} | {PUBLISHED['across_r2_md']} |",
        f"| across tumours, structure anisotropy → in-plane FA, R² | {s['across_r2_faip']:.3f} "
        f"| {PUBLISHED['across_r2_faip']} |",
        f"| across tumours, structure anisotropy → FA, R² | {s['across_r2_fa']:.3f} | |",
    ]
    for t, label in (("md", "MD"), ("faip", "in-plane FA")):
        lines.append(
            f"| per tumour, median test R² ({label}), r2 / ev | {s[f'per_tumour_median_r2_{t}']:.3f} / "
            f"{s[f'per_tumour_median_ev_{t}']:.3f} | |"
        )
        if f"cnn_median_r2_{t}" in s:
            lines.append(
                f"| published per-tumour CNN, median test R² ({label}), r2 / ev | "
                f"{s[f'cnn_median_r2_{t}']:.3f} / {s[f'cnn_median_ev_{t}']:.3f} | "
                f"{PUBLISHED[f'cnn_median_r2_{t}']} |"
            )
    lines += ["", "## Per tumour (test R², median over splits)", ""]
    cols = [
        c for c in ("sample", "n_voxels", "r2_md", "ev_md", "cnn_r2_md", "r2_faip", "ev_faip", "cnn_r2_faip")
    ]
    cols = [c for c in cols if c in result.per_tumour]
    lines += ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for _, row in result.per_tumour[cols].iterrows():
        lines.append(
            "| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.tolist()) + " |"
        )
    lines += ["", "r2 = 1 − SS_res/SS_tot; ev = 1 − var(y − ŷ)/var(y) (explained variance, thesis Eq. 3.2)."]
    with atomic_path(out / "report.md") as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
    return out
