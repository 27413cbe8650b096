"""Synthetic H&E phantom with known MD, FA and nuclei-count targets.

Each sample (a "tumour") is a grid of voxels with spatially smooth maps of tissue
parameters: nuclear density, nuclear size and elongation, local orientation and its
coherence, and air (extracellular space) fraction. The sample is rendered as one canvas
of ``grid * patch_size_px`` pixels (nuclei cross patch borders) and cut into one patch
per voxel. Samples differ in stain colours, parameter ranges, blur and noise, so leaving
a sample out is a real distribution shift.

Per patch the targets are functions of what was drawn in it (see ``FORMULAS``):

- ``cc``: number of nuclei whose centre lies in the patch's half-open pixel box.
- ``md_clean = af * D_FREE + (1 - af) * (D_CELL + (D_ECM - D_CELL) * (1 - phi)^2)``, with
  ``af`` the air fraction and ``phi = nf / (1 - af)`` the nuclear fraction of the
  tissue, both measured on the mask: a two-compartment mixture of free water and
  tissue whose diffusivity falls with cellularity (Archie-like tortuosity).
- ``fa_clean = FA_BASE + FA_GAIN * order * (1 - af)``, with ``order`` the area-weighted
  nematic order of the nuclei centred in the patch, ``|sum w (1 - b/a) e^{2i angle}| /
  sum w`` (``w = pi a b``): high when elongated nuclei are aligned.
- ``md = md_clean + N(0, noise_sd_md^2)``, ``fa = clip(fa_clean + N(0, noise_sd_fa^2), 0, 1)``.

Distractors (red blood cell clusters, dark debris) are painted only over stroma pixels
after the targets' inputs are fixed, so they never change a target.

Example:
    >>> blocks, card = generate_phantom(PhantomConfig(n_samples=2, grid_vox=(4, 4)), 32, seed=0)
    >>> blocks[0].images.shape
    (16, 32, 32, 3)
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from tqdm import tqdm

from histoxai.config import PhantomConfig
from histoxai.data import phantom_draw as draw
from histoxai.data.phantom_draw import AIR, DISTRACTOR, NUCLEI, STROMA, save_montage
from histoxai.data.phantom_profile import SampleProfile, draw_profile
from histoxai.data.store import MASK_CLASSES, SampleBlock

__all__ = [
    "FORMULAS",
    "class_means",
    "fa_from_order",
    "generate_phantom",
    "md_from_fractions",
    "nuclei_stats",
    "render_sample",
    "save_montage",
]

D_FREE, D_ECM, D_CELL = 2.4, 2.0, 0.2  # um^2/ms: free water, extracellular matrix, restricted
FA_BASE, FA_GAIN = 0.1, 1.0

FORMULAS = {
    "cc": "number of nuclei whose centre (cx, cy) lies in the patch box [0, P) x [0, P)",
    "nuclear_fraction": "nf = fraction of patch pixels labelled nuclei in the mask",
    "air_fraction": "af = fraction of patch pixels labelled air in the mask",
    "md_clean": f"af*{D_FREE} + (1-af)*({D_CELL} + {D_ECM - D_CELL:.1f}*(1 - phi)^2), "
    "phi = min(1, nf/(1-af))  [um^2/ms]",
    "order": "|sum_i w_i (1 - b_i/a_i) exp(2j angle_i)| / sum_i w_i, w_i = pi a_i b_i, "
    "over nuclei centred in the patch (0 if none)",
    "coherence": "|sum_i w_i exp(2j angle_i)| / sum_i w_i (0 if no nuclei)",
    "elongation": "sum_i w_i a_i/b_i / sum_i w_i (1 if no nuclei)",
    "fa_clean": f"{FA_BASE} + {FA_GAIN}*order*(1-af)",
    "md": "md_clean + N(0, noise_sd_md^2)",
    "fa": "clip(fa_clean + N(0, noise_sd_fa^2), 0, 1)",
    "shortcut_cue": "shortcut_strength * clip((md - 0.1)/2.3, 0, 1) if shortcut else 0: relative "
    "darkening of the 1-px patch border",
}


def md_from_fractions(nuclear_fraction: np.ndarray, air_fraction: np.ndarray) -> np.ndarray:
    """Noise-free MD (um^2/ms) from measured nuclear and air area fractions."""
    nf, af = np.asarray(nuclear_fraction, float), np.asarray(air_fraction, float)
    tissue = 1.0 - af
    phi = np.minimum(1.0, np.divide(nf, tissue, out=np.zeros_like(nf), where=tissue > 0))
    # tissue: Archie-like tortuosity, D_tissue = D_CELL + (D_ECM - D_CELL) (1 - phi)^2
    return af * D_FREE + tissue * (D_CELL + (D_ECM - D_CELL) * (1.0 - phi) ** 2)


def fa_from_order(order: np.ndarray, air_fraction: np.ndarray) -> np.ndarray:
    """Noise-free FA from the nuclei's nematic order and the air fraction."""
    return FA_BASE + FA_GAIN * np.asarray(order, float) * (1.0 - np.asarray(air_fraction, float))


def nuclei_stats(nuclei: pd.DataFrame, n_patches: int) -> dict[str, np.ndarray]:
    """Per-patch ``order``, ``coherence`` and ``elongation`` from a nuclei table
    (columns ``offset``, ``a``, ``b``, ``angle``), see ``FORMULAS``."""
    off = nuclei["offset"].to_numpy()
    a, b, ang = (nuclei[c].to_numpy(float) for c in ("a", "b", "angle"))
    w = np.pi * a * b

    def total(x):
        return np.bincount(off, weights=x, minlength=n_patches)

    wsum = total(w)
    safe = np.where(wsum > 0, wsum, 1.0)
    cos, sin = np.cos(2 * ang), np.sin(2 * ang)
    aniso = w * (1 - b / a)
    return {
        "order": np.hypot(total(aniso * cos), total(aniso * sin)) / safe,
        "coherence": np.hypot(total(w * cos), total(w * sin)) / safe,
        "elongation": np.where(wsum > 0, total(w * a / b) / safe, 1.0),
    }


def generate_phantom(cfg: PhantomConfig, patch_size_px: int, seed: int) -> tuple[list[SampleBlock], dict]:
    """Generate the phantom: one block per sample (``s1``, ``s2``, ...) and the dataset card.

    Args:
        cfg: phantom parameters.
        patch_size_px: patch side (any size >= 8).
        seed: the same seed gives byte-identical arrays.

    Returns:
        ``(blocks, card)``; the card is JSON-serialisable.
    """
    if patch_size_px < 4:
        raise ValueError(f"patch_size_px={patch_size_px}: expected at least 4")
    blocks, profiles = [], {}
    for i in tqdm(range(cfg.n_samples), desc="phantom", unit="sample", leave=False):
        rng = np.random.default_rng([seed, i])
        profile = draw_profile(rng, f"s{i + 1}")
        blocks.append(render_sample(cfg, profile, patch_size_px, rng))
        profiles[profile.name] = profile
    return blocks, _card(cfg, patch_size_px, seed, blocks, profiles)


def render_sample(
    cfg: PhantomConfig, profile: SampleProfile, size: int, rng: np.random.Generator
) -> SampleBlock:
    """Draw one sample's canvas, cut it into patches and compute the targets."""
    rows, cols = cfg.grid_vox
    shape = (rows * size, cols * size)
    maps = {
        k: lo + (hi - lo) * draw.unit_field(rng, (rows, cols), cfg.smoothness_vox)
        for k, (lo, hi) in profile.ranges.items()
    }
    u, v = (draw.unit_field(rng, (rows, cols), cfg.smoothness_vox) - 0.5 for _ in range(2))
    maps["orientation"] = 0.5 * np.arctan2(v, u)

    # air: a smooth pixel field thresholded at the local air-fraction map
    labels = np.where(
        draw.smooth_field(rng, shape, 6.0 / cfg.um_per_px) < draw.upsample(maps["air_fraction"], size),
        AIR,
        STROMA,
    ).astype(np.uint8)

    nuc = _place_nuclei(maps, size, cfg.um_per_px, rng)
    keep = labels[nuc["cy"].astype(np.int64), nuc["cx"].astype(np.int64)] != AIR
    nuc = {k: x[keep] for k, x in nuc.items()}
    conc = np.zeros((3, *shape), dtype=np.float32)  # haematoxylin, eosin, RBC
    h_scale, e_scale = profile.stain_scale
    tex = draw.smooth_field(rng, shape, 2.0)
    conc[0] = np.where(labels == AIR, 0.01, 0.05 * h_scale)
    conc[1] = np.where(labels == AIR, 0.03, e_scale * (0.25 + 0.4 * tex))

    k, ys, xs, rho2 = draw.ellipse_pixels(nuc["cx"], nuc["cy"], nuc["a"], nuc["b"], nuc["angle"], shape)
    labels[ys, xs] = NUCLEI
    grain = draw.smooth_field(rng, shape, 0.8)[ys, xs]
    conc[0, ys, xs] = h_scale * nuc["dark"][k] * (0.75 + 0.35 * rho2) * (0.8 + 0.4 * grain)
    conc[1, ys, xs] = 0.15 * e_scale

    nf, af = (_fractions(labels, size, c) for c in (NUCLEI, AIR))  # fixed before distractors
    # own stream: switching distractors on or off leaves every other draw (and target) unchanged
    distractor_rng = np.random.default_rng(rng.integers(2**63))
    if cfg.distractors:
        draw.paint_distractors(labels, conc, cfg.um_per_px, distractor_rng)
    images = draw.cut_patches(
        draw.render_rgb(
            conc, profile.stains_od, profile.background, profile.blur_px, profile.noise_gray, rng
        ),
        size,
    )
    masks = draw.cut_patches(labels, size)
    table, nuclei = _targets(cfg, nuc, nf, af, masks, size, rows, cols, rng)
    table = pd.concat([table, pd.DataFrame({f"map_{k}": m.ravel() for k, m in maps.items()})], axis=1)
    if cfg.shortcut:
        _draw_shortcut(images, table["shortcut_cue"].to_numpy())
    return SampleBlock(profile.name, images, table, masks, {"nuclei": nuclei})


def _place_nuclei(maps: dict, size: int, um_per_px: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    rows, cols = maps["orientation"].shape
    area_kum2 = (size * um_per_px) ** 2 / 1000
    counts = rng.poisson(maps["density_per_kum2"].ravel() * area_kum2)
    vox = np.repeat(np.arange(rows * cols), counts)
    n = len(vox)
    m = {k: x.ravel()[vox] for k, x in maps.items()}
    radius = np.clip(m["radius_um"] * (1 + 0.12 * rng.standard_normal(n)), 1.0, None) / um_per_px
    elong = np.clip(m["elongation"] * (1 + 0.1 * rng.standard_normal(n)), 1.0, None)
    b = np.maximum(radius / np.sqrt(elong), 0.8)
    col, row = vox % cols, vox // cols
    # float rounding must not push a centre onto the next voxel's first pixel
    cx = np.minimum((col + rng.random(n)) * size, np.nextafter((col + 1) * size, 0.0))
    cy = np.minimum((row + rng.random(n)) * size, np.nextafter((row + 1) * size, 0.0))
    return {
        "cx": cx,
        "cy": cy,
        "a": np.maximum(radius * np.sqrt(elong), b),
        "b": b,
        "angle": m["orientation"] + (1 - m["coherence"]) * rng.uniform(-np.pi / 2, np.pi / 2, n),
        "dark": rng.uniform(1.1, 1.7, n),
    }


def _fractions(labels: np.ndarray, size: int, label: int) -> np.ndarray:
    hit = (labels == label).reshape(labels.shape[0] // size, size, labels.shape[1] // size, size)
    return hit.mean(axis=(1, 3)).ravel()


def _targets(cfg, nuc, nf, af, masks, size, rows, cols, rng) -> tuple[pd.DataFrame, pd.DataFrame]:
    n = rows * cols
    col = (nuc["cx"] // size).astype(np.int64)
    row = (nuc["cy"] // size).astype(np.int64)
    order = np.argsort(row * cols + col, kind="stable")
    nuclei = pd.DataFrame(
        {
            "offset": (row * cols + col)[order],
            "cx": (nuc["cx"] - col * size)[order],
            "cy": (nuc["cy"] - row * size)[order],
            "a": nuc["a"][order],
            "b": nuc["b"][order],
            "angle": np.mod(nuc["angle"][order] + np.pi / 2, np.pi) - np.pi / 2,
        }
    )
    stats = nuclei_stats(nuclei, n)
    md_clean, fa_clean = md_from_fractions(nf, af), fa_from_order(stats["order"], af)
    md = md_clean + cfg.noise_sd_md * rng.standard_normal(n)
    fa = np.clip(fa_clean + cfg.noise_sd_fa * rng.standard_normal(n), 0.0, 1.0)
    cue = cfg.shortcut_strength * np.clip((md - 0.1) / 2.3, 0, 1) if cfg.shortcut else np.zeros(n)
    table = pd.DataFrame(
        {
            "row": np.repeat(np.arange(rows), cols).astype(np.int32),
            "col": np.tile(np.arange(cols), rows).astype(np.int32),
            "md": md,
            "fa": fa,
            "cc": np.bincount(nuclei["offset"], minlength=n).astype(np.int64),
            "md_clean": md_clean,
            "fa_clean": fa_clean,
            "nuclear_fraction": nf,
            "air_fraction": af,
            "distractor_fraction": (masks == DISTRACTOR).mean(axis=(1, 2)),
            **stats,
            "shortcut_cue": cue,
        }
    )
    return table, nuclei


def _draw_shortcut(images: np.ndarray, cue: np.ndarray) -> None:
    """Darken the 1-px border of each patch by the relative amount ``cue`` (in place)."""
    ring = np.zeros(images.shape[1:3], dtype=bool)
    ring[[0, -1], :] = ring[:, [0, -1]] = True
    scaled = images[:, ring].astype(np.float32) * (1 - cue)[:, None, None]
    images[:, ring] = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def class_means(images: np.ndarray, masks: np.ndarray) -> dict[str, list[float]]:
    """Mean RGB of the pixels of each mask class present (``MASK_CLASSES`` names)."""
    lab = masks.ravel()
    count = np.bincount(lab, minlength=len(MASK_CLASSES))
    sums = [np.bincount(lab, weights=images[..., ch].ravel(), minlength=len(MASK_CLASSES)) for ch in range(3)]
    return {
        MASK_CLASSES[c]: [round(float(s[c] / count[c]), 2) for s in sums]
        for c in range(len(MASK_CLASSES))
        if count[c]
    }


def _card(cfg, size, seed, blocks, profiles) -> dict:
    table = pd.concat([b.table for b in blocks], ignore_index=True)
    noise = {"md": cfg.noise_sd_md, "fa": cfg.noise_sd_fa}
    ceilings = {t: _ceiling(table[t].to_numpy(), noise[t]) for t in ("md", "fa")} | {"cc": 1.0}
    samples = {}
    for block in blocks:
        t = block.table
        samples[block.sample] = profiles[block.sample].card() | {
            "measured": {
                c: [float(t[c].min()), float(t[c].max())]
                for c in ("md", "fa", "cc", "nuclear_fraction", "air_fraction")
            },
            "mean_rgb": class_means(block.images, block.masks),
        }
    return {
        "source": "phantom",
        "generator": "histoxai.data.phantom.generate_phantom",
        "seed": int(seed),
        "params": _plain(dataclasses.asdict(cfg)),
        "voxel_um": size * cfg.um_per_px,
        "formulas": FORMULAS,
        "constants": {
            "D_FREE": D_FREE,
            "D_ECM": D_ECM,
            "D_CELL": D_CELL,
            "FA_BASE": FA_BASE,
            "FA_GAIN": FA_GAIN,
        },
        "mask_classes": list(MASK_CLASSES),
        "noise_sd": noise,
        "ceilings": ceilings,
        "shortcut": (
            f"patch border darkened by shortcut_cue (<= {cfg.shortcut_strength}), correlated with md; "
            "masks unchanged"
            if cfg.shortcut
            else "off"
        ),
        "distractors": "RBC clusters and dark debris over stroma only; no effect on targets"
        if cfg.distractors
        else "off",
        "samples": samples,
    }


def _ceiling(values: np.ndarray, sd: float) -> float:
    """Noise-limited R^2 ceiling ``1 - sd^2 / var(values)`` (1 when noise-free)."""
    var = float(np.var(values))
    return 1.0 if sd == 0 else float(max(0.0, 1.0 - sd**2 / var)) if var > 0 else 0.0


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return [_plain(v) for v in x]
    return x
