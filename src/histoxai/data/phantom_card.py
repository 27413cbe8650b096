"""The phantom's dataset card: formulas, constants, per-sample character and three
reference R² per target.

- ``ceilings`` (label noise): ``1 - sd^2 / var(target)``, the best any model can reach
  when it knows the clean target exactly (1 for ``cc``, which has no label noise).
- ``oracle_ceilings`` (image oracle): cross-validated R² of a gradient-boosted tree model
  (scikit-learn ``HistGradientBoostingRegressor``, 5 folds grouped by nothing but patch)
  on features computed from the rendered patch, its mask and its instance mask
  (:func:`oracle_features`): what the pixels allow a strong, explicit reader to reach.
- ``sample_mean_baseline``: R² of predicting each patch by its sample's mean (the
  "recognise the sample" shortcut), and ``oracle_within_sample``: the oracle's R² against
  each sample's own mean (``1 - SS_res / sum (y - mean_sample)^2``).

``per_sample_shift`` gives each sample's mean target minus the pooled mean, in units of
the pooled standard deviation: how far a left-out sample sits from the others.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from scipy import ndimage

from histoxai.data import phantom as ph
from histoxai.data.phantom_draw import AIR, DISTRACTOR, EOSIN_OD, HAEMATOXYLIN_OD, NUCLEI, STROMA
from histoxai.data.store import SampleBlock

TARGET_NAMES = ("md", "fa", "cc")
MIN_ORACLE_PATCHES = 100  # fewer patches: no image-oracle ceiling (null in the card)
ST_SCALES_PX = (1.0, 2.0, 4.0)  # structure-tensor integration scales (at the patch resolution)


def phantom_card(cfg, size: int, seed: int, blocks: list[SampleBlock], profiles: dict) -> dict:
    """The JSON-serialisable card of a generated phantom."""
    table = pd.concat([b.table.assign(sample=b.sample) for b in blocks], ignore_index=True)
    noise = {"md": cfg.noise_sd_md, "fa": cfg.noise_sd_fa}
    ceilings = {t: noise_ceiling(table[t].to_numpy(), noise[t]) for t in ("md", "fa")} | {"cc": 1.0}
    groups = table["sample"].to_numpy()
    oracle: dict[str, float | None] = dict.fromkeys(TARGET_NAMES)
    within = dict(oracle)
    if len(table) >= MIN_ORACLE_PATCHES:
        features = np.concatenate([oracle_features(b) for b in blocks])
        for t in TARGET_NAMES:
            y = table[t].to_numpy(float)
            pred = oracle_predictions(features, y, seed)
            oracle[t] = r2(y, pred)
            within[t] = within_sample_r2(y, pred, groups)
    shortcut = {t: r2(table[t].to_numpy(float), _sample_means(table, t)) for t in TARGET_NAMES}
    render, um = ph.render_px(cfg, size)
    dist = table["distractor_fraction"].to_numpy()
    samples = {}
    for block in blocks:
        t = block.table
        samples[block.sample] = profiles[block.sample].card() | {
            "measured": {
                c: [float(t[c].min()), float(t[c].max())]
                for c in ("md", "fa", "cc", "nuclear_fraction", "air_fraction", "distractor_fraction")
            },
            "mean": {c: float(t[c].mean()) for c in TARGET_NAMES},
            "mean_rgb": ph.class_means(block.images, block.masks),
        }
    return {
        "source": "phantom",
        "generator": "histoxai.data.phantom.generate_phantom",
        "seed": int(seed),
        "params": _plain(dataclasses.asdict(cfg)),
        "geometry": cfg.geometry,
        "voxel_um": render * um,
        "render_px": render,
        "render_um_per_px": um,
        "um_per_px": render * um / size,
        "formulas": ph.FORMULAS,
        "constants": {
            "D_FREE": ph.D_FREE,
            "D_STROMA": ph.D_STROMA,
            "D_NUC": ph.D_NUC,
            "K_NUC": ph.K_NUC,
            "K_FIBRE": ph.K_FIBRE,
            "CC_VISIBLE": ph.CC_VISIBLE,
        },
        "mask_classes": ["stroma", "nuclei", "air", "distractor"],
        "noise_sd": noise,
        "ceilings": ceilings,
        "oracle_ceilings": oracle,
        "oracle_within_sample": within,
        "sample_mean_baseline": shortcut,
        "ceiling_notes": __doc__.split("\n\n")[1].strip(),
        "per_sample_shift": {
            s: {t: float((g[t].mean() - table[t].mean()) / table[t].std()) for t in TARGET_NAMES}
            for s, g in table.groupby("sample", sort=False)
        },
        "distractor_area": {
            "mean": float(dist.mean()),
            "median": float(np.median(dist)),
            "share_of_patches_ge_3pct": float((dist >= 0.03).mean()),
        },
        "shortcut": (
            f"patch border darkened by shortcut_cue (<= {cfg.shortcut_strength}), correlated with md; "
            "masks unchanged"
            if cfg.shortcut
            else "off"
        ),
        "distractors": f"RBC clusters and dark debris over stroma only (density {cfg.distractor_density}); "
        "no effect on targets"
        if cfg.distractors
        else "off",
        "samples": samples,
    }


def oracle_features(block: SampleBlock) -> np.ndarray:
    """(n, F) features of each patch from its pixels, mask and instance mask.

    Class fractions; counted-nuclei evidence from the instance mask (instances away from
    the border, border instances, border instances showing at least half the median
    interior area, their visible area in interior-area units); the area-weighted nematic
    vector of the instances' second moments; multi-scale structure-tensor coherence and
    orientation vectors of the haematoxylin and eosin optical densities; and
    rotation-invariant combinations of the nuclear and stromal vectors.
    """
    masks, inst, images = block.masks, block.instances, block.images
    n, size = len(masks), masks.shape[1]
    feats = [(masks == c).mean(axis=(1, 2)) for c in (NUCLEI, AIR, DISTRACTOR)]
    feats += list(_instance_features(inst))
    od = -np.log((images.astype(np.float32) + 1.0) / 256.0)  # (n, P, P, 3)
    stains = np.stack([HAEMATOXYLIN_OD, EOSIN_OD, np.cross(HAEMATOXYLIN_OD, EOSIN_OD)])
    conc = od @ np.linalg.inv(stains).astype(np.float32)  # colour deconvolution (Ruifrok 2001)
    h, e = conc[..., 0], conc[..., 1]
    # stroma away from nuclei, air and distractors: where fibres are the only structure
    stroma = ndimage.binary_erosion(masks == STROMA, np.ones((1, 5, 5), bool))
    weight = stroma / np.maximum(stroma.sum(axis=(1, 2), keepdims=True), 1)
    feats.append(stroma.mean(axis=(1, 2)))
    vectors = []
    for chan in (h, e):
        feats.append(chan.mean(axis=(1, 2)))
        for s in ST_SCALES_PX:
            s = s * size / 128
            gy = ndimage.gaussian_filter(chan, (0, s, s), order=(0, 1, 0))
            gx = ndimage.gaussian_filter(chan, (0, s, s), order=(0, 0, 1))
            for w in (None, weight):
                jxx, jyy, jxy = (_mean(g, w) for g in (gx * gx, gy * gy, gx * gy))
                tr = np.maximum(jxx + jyy, 1e-12)
                # fibres run across the gradient: the nematic vector is the negative of the gradient's
                v = np.stack([-(jxx - jyy) / tr, -2 * jxy / tr], axis=1)
                vectors.append(v)
                feats += [np.hypot(*v.T), np.log(tr)]
    nuc_vec = _nuclear_vector(inst, n)
    feats += [nuc_vec[:, 0], nuc_vec[:, 1], np.hypot(*nuc_vec.T)]
    for v in vectors[2 * len(ST_SCALES_PX) :]:  # eosin (stroma) vectors vs the nuclear vector
        feats.append((v * nuc_vec).sum(1))
        for w in (0.5, 1.0, 2.0):
            feats.append(np.hypot(*(nuc_vec + w * v).T))
    return np.column_stack(feats).astype(np.float64)


def _mean(x: np.ndarray, weight: np.ndarray | None) -> np.ndarray:
    return x.mean(axis=(1, 2)) if weight is None else (x * weight).sum(axis=(1, 2))


def _instance_features(inst: np.ndarray) -> tuple[np.ndarray, ...]:
    n, size = inst.shape[0], inst.shape[1]
    key = np.arange(n, dtype=np.int64)[:, None, None] * (int(inst.max()) + 1) + inst
    on = inst.ravel() > 0
    uniq, inverse, area = np.unique(key.ravel()[on], return_inverse=True, return_counts=True)
    patch = uniq // (int(inst.max()) + 1)
    edge = np.zeros((size, size), dtype=bool)
    edge[[0, -1], :] = edge[:, [0, -1]] = True
    border = np.bincount(inverse, np.broadcast_to(edge, inst.shape).ravel()[on], len(uniq)) > 0
    interior = np.bincount(patch[~border], minlength=n).astype(float)
    med = np.median(area[~border]) if (~border).any() else 1.0
    n_border = np.bincount(patch[border], minlength=n).astype(float)
    half = np.bincount(patch[border & (area >= 0.5 * med)], minlength=n).astype(float)
    border_area = np.bincount(patch[border], weights=area[border] / med, minlength=n)
    return interior, n_border, half, border_area, interior + half


def _nuclear_vector(inst: np.ndarray, n: int) -> np.ndarray:
    """Area-weighted nematic vector sum_i A_i (l1-l2)/(l1+l2) (cos 2t, sin 2t) / P^2 of the
    instances' second moments, (n, 2)."""
    size = inst.shape[1]
    top = int(inst.max()) + 1
    key = (np.arange(n, dtype=np.int64)[:, None, None] * top + inst).ravel()
    on = inst.ravel() > 0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    y = np.broadcast_to(yy, inst.shape).ravel()[on]
    x = np.broadcast_to(xx, inst.shape).ravel()[on]
    uniq, inverse, area = np.unique(key[on], return_inverse=True, return_counts=True)

    def mean(v):
        return np.bincount(inverse, v, len(uniq)) / area

    my, mx = mean(y), mean(x)
    cyy, cxx = mean(y * y) - my**2 + 1 / 12, mean(x * x) - mx**2 + 1 / 12
    cxy = mean(x * y) - mx * my
    tr = cxx + cyy
    q, r = (cxx - cyy) / tr, 2 * cxy / tr
    patch = uniq // top
    out = np.zeros((n, 2))
    out[:, 0] = np.bincount(patch, area * q, n) / size**2
    out[:, 1] = np.bincount(patch, area * r, n) / size**2
    return out


def oracle_predictions(features: np.ndarray, y: np.ndarray, seed: int, folds: int = 5) -> np.ndarray:
    """Out-of-fold predictions of a gradient-boosted tree model (5-fold, shuffled)."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.model_selection import KFold

    pred = np.empty_like(y, dtype=float)
    for train, test in KFold(folds, shuffle=True, random_state=seed).split(features):
        model = HistGradientBoostingRegressor(max_iter=300, learning_rate=0.06, random_state=seed)
        pred[test] = model.fit(features[train], y[train]).predict(features[test])
    return pred


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    return float(1 - np.sum((y - pred) ** 2) / max(float(np.sum((y - y.mean()) ** 2)), 1e-300))


def within_sample_r2(y: np.ndarray, pred: np.ndarray, groups: np.ndarray) -> float:
    """``1 - SS_res / sum (y - mean of y's sample)^2``: R² against each sample's own mean."""
    means = pd.Series(y).groupby(groups).transform("mean").to_numpy()
    return float(1 - np.sum((y - pred) ** 2) / max(float(np.sum((y - means) ** 2)), 1e-300))


def _sample_means(table: pd.DataFrame, t: str) -> np.ndarray:
    return table.groupby("sample", sort=False)[t].transform("mean").to_numpy(float)


def noise_ceiling(values: np.ndarray, sd: float) -> float:
    """Noise-limited R^2 ceiling ``1 - sd^2 / var(values)`` (1 when noise-free)."""
    var = float(np.var(values))
    return 1.0 if sd == 0 else float(max(0.0, 1.0 - sd**2 / var)) if var > 0 else 0.0


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return [_plain(v) for v in x]
    return x
