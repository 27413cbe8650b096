"""A phantom sample as a scene: every random draw first, then deterministic composition.

:func:`build_scene` draws everything a sample needs (voxel maps, air, nuclei, textures,
distractors, sensor and label noise) from one generator. :func:`compose` then paints
any window of the canvas, optionally without one object (a nucleus, an RBC cluster, a
debris speck, an air blob), and :func:`render_window` turns it into RGB. Because no
random number is drawn while composing, a window re-rendered without an object equals
the original everywhere the object and its blur do not reach: the in-distribution
intervention ``phantom_truth.ablate`` relies on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from histoxai.config import PhantomConfig
from histoxai.data import phantom_draw as draw
from histoxai.data.phantom_draw import AIR, NUCLEI, STROMA
from histoxai.data.phantom_profile import PARAMS, SampleProfile

FIBRE_WIDTH_UM = 0.8  # correlation length across a fibre
FIBRE_STEP_UM = 0.25  # sampling step of the 1-D fibre profile


@dataclass
class Scene:
    """All random draws of one sample (canvas coordinates, rendering px)."""

    cfg: PhantomConfig
    profile: SampleProfile
    size: int  # rendering px per voxel side
    um_per_px: float  # rendering resolution
    grid: tuple[int, int]
    maps: dict[str, np.ndarray]  # (rows, cols) voxel maps incl. ``orientation``
    air: np.ndarray  # (H, W) bool
    nuc: dict[str, np.ndarray]  # cx, cy, a, b, angle, dark, area_px (set by compose), local_density
    tex: np.ndarray  # (H, W) isotropic eosin texture in [0, 1]
    grain_salt: float  # seed of the per-pixel nuclear chromatin grain (``draw.pixel_hash``)
    streak: np.ndarray  # (H, W) along-fibre modulation in [0, 1]
    fibre_profile: np.ndarray  # 1-D fibre intensity across fibres, in [0, 1]
    fibre_offset: np.ndarray  # (rows, cols) um: where each voxel reads the profile
    distractors: dict[str, np.ndarray]
    noise: np.ndarray  # (3, H, W) float32 uniform [0, 1) draws of the sensor noise
    label_noise: tuple[np.ndarray, np.ndarray]  # (n,) standard normals for md, fa

    @property
    def shape(self) -> tuple[int, int]:
        return self.grid[0] * self.size, self.grid[1] * self.size

    @property
    def blur_px(self) -> float:
        return self.profile.blur_px * 0.5 / self.um_per_px


@dataclass
class Canvas:
    """A composed window: labels, concentrations and global nucleus id + 1 per pixel."""

    labels: np.ndarray  # (h, w) uint8
    conc: np.ndarray  # (3, h, w) float32
    gid: np.ndarray  # (h, w) int32, 0 = no nucleus


def build_scene(
    cfg: PhantomConfig, profile: SampleProfile, size: int, um: float, rng: np.random.Generator
) -> Scene:
    """Draw every random quantity of one sample."""
    from histoxai.data.phantom import local_density

    rows, cols = cfg.grid_vox
    shape = (rows * size, cols * size)
    maps = {
        k: lo + (hi - lo) * draw.unit_field(rng, (rows, cols), cfg.smoothness_vox)
        for k, (lo, hi) in ((k, profile.ranges[k]) for k in PARAMS)
    }
    u, v = (draw.unit_field(rng, (rows, cols), cfg.smoothness_vox) - 0.5 for _ in range(2))
    maps["orientation"] = 0.5 * np.arctan2(v, u)
    air = draw.smooth_field(rng, shape, 6.0 / um) < draw.upsample(maps["air_fraction"], size)
    nuc = _place_nuclei(maps, size, um, rng)
    keep = ~air[nuc["cy"].astype(np.int64), nuc["cx"].astype(np.int64)]
    nuc = {k: x[keep] for k, x in nuc.items()}
    nuc["area_px"] = np.full(len(nuc["cx"]), -1, dtype=np.int64)  # filled by the first full compose
    nuc["local_density"] = local_density(nuc["cx"], nuc["cy"], um)
    tex = draw.smooth_field(rng, shape, 2.0 / um, uniform=False)
    grain_salt = float(rng.uniform(0, 1000))
    streak = draw.smooth_field(rng, shape, 4.0 / um, uniform=False)
    diag_um = float(np.hypot(*shape)) * um
    voxel_um = size * um
    n_prof = int((diag_um + 3 * voxel_um) / FIBRE_STEP_UM) + 8
    prof = draw.unit_field(rng, (n_prof,), FIBRE_WIDTH_UM / FIBRE_STEP_UM).astype(np.float32)
    prof = np.clip((prof - prof.mean()) / max(float(prof.std()), 1e-9) * 0.25 + 0.5, 0, 1)
    fibre_offset = rng.uniform(voxel_um, voxel_um + diag_um, (rows, cols))
    # own stream: the distractor density leaves every other draw (and target) unchanged
    distractor_rng = np.random.default_rng(rng.integers(2**63))
    density = cfg.distractor_density if cfg.distractors else 0.0
    objects = draw.draw_distractors(distractor_rng, shape, um, density)
    # sensor noise: uniform with sd = noise_gray (cheaper than Gaussian; the shape hardly shows),
    # scaled to grey levels window by window in ``render_window``
    noise = rng.random((3, *shape), dtype=np.float32)
    label_noise = (rng.standard_normal(rows * cols), rng.standard_normal(rows * cols))
    return Scene(
        cfg, profile, size, um, (rows, cols), maps, air, nuc, tex, grain_salt, streak, prof, fibre_offset,
        objects, noise, label_noise,
    )  # fmt: skip


def _place_nuclei(maps: dict, size: int, um: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    rows, cols = maps["orientation"].shape
    area_kum2 = (size * um) ** 2 / 1000
    counts = rng.poisson(maps["density_per_kum2"].ravel() * area_kum2)
    vox = np.repeat(np.arange(rows * cols), counts)
    n = len(vox)
    m = {k: x.ravel()[vox] for k, x in maps.items()}
    radius = np.clip(m["radius_um"] * (1 + 0.12 * rng.standard_normal(n)), 1.0, None) / um
    elong = np.clip(m["elongation"] * (1 + 0.1 * rng.standard_normal(n)), 1.0, None)
    b = np.maximum(radius / np.sqrt(elong), 0.8)
    col, row = vox % cols, vox // cols
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


def compose(
    scene: Scene,
    window: tuple[int, int, int, int],
    drop_nucleus: int = -1,
    drop_cluster: int = -1,
    drop_debris: int = -1,
    drop_air: np.ndarray | None = None,
) -> Canvas:
    """Paint the canvas window ``(y0, y1, x0, x1)``, optionally without one object.

    Args:
        scene: the sample's draws.
        window: canvas rows ``y0:y1`` and columns ``x0:x1``.
        drop_nucleus: global index of a nucleus to leave out (-1: none).
        drop_cluster, drop_debris: distractor objects to leave out (-1: none).
        drop_air: (y1-y0, x1-x0) bool: air pixels that become stroma (an air blob removed).
    """
    y0, y1, x0, x1 = window
    shape = (y1 - y0, x1 - x0)
    air = scene.air[y0:y1, x0:x1].copy()
    if drop_air is not None:
        air &= ~drop_air
    labels = np.full(shape, STROMA, dtype=np.uint8)
    labels[air] = AIR
    h_scale, e_scale = scene.profile.stain_scale
    conc = np.empty((3, *shape), dtype=np.float32)
    conc[0] = 0.05 * h_scale
    conc[0][air] = 0.01
    eosin = _eosin_texture(scene, window) * np.float32(0.4)
    eosin += np.float32(0.25)
    np.multiply(eosin, np.float32(e_scale), out=conc[1])
    conc[1][air] = 0.03
    conc[2] = 0.0

    nuc = scene.nuc
    near = draw._near(nuc["cx"] - x0, nuc["cy"] - y0, nuc["a"], shape)
    if drop_nucleus >= 0:
        near[drop_nucleus] = False
    idx = np.flatnonzero(near)
    area = np.zeros(len(idx), dtype=np.int64)
    k, ys, xs, rho2 = draw.ellipse_pixels(
        nuc["cx"][idx] - x0,
        nuc["cy"][idx] - y0,
        nuc["a"][idx],
        nuc["b"][idx],
        nuc["angle"][idx],
        shape,
        area=area,
    )
    nuc["area_px"][idx] = area  # whole-ellipse pixel counts (before clipping): the same in every window
    at = ys * shape[1] + xs  # flat pixel index (one 1-D scatter is cheaper than a 2-D one)
    gid = np.zeros(shape, dtype=np.int32)
    gid.ravel()[at] = idx[k] + 1  # painting order of ellipse_pixels decides who hides whom (last write wins)
    labels.ravel()[at] = NUCLEI
    grain = draw.pixel_hash(ys + y0, xs + x0, scene.grain_salt)
    conc[0].ravel()[at] = h_scale * nuc["dark"][idx[k]] * (0.75 + 0.35 * rho2) * (0.8 + 0.4 * grain)
    conc[1].ravel()[at] = 0.15 * e_scale
    draw.paint_distractors(labels, conc, scene.distractors, (y0, x0), drop_cluster, drop_debris)
    return Canvas(labels, conc, gid)


def _eosin_texture(scene: Scene, window: tuple[int, int, int, int]) -> np.ndarray:
    """Stroma texture in [0, 1]: isotropic where ``fibres`` is 0, parallel fibres along the
    voxel's orientation where it is 1 (same mean, similar spread), mixed in between.

    Computed voxel row by voxel row on the window's rows and the voxel-aligned cover of
    its columns, in (rows, cols, size) block layout (per-voxel values broadcast, no
    per-pixel gathers), then cropped to the window's columns.
    """
    y0, y1, x0, x1 = window
    size, um = scene.size, scene.um_per_px
    c0, c1 = x0 // size, -(-x1 // size)
    cols = slice(c0 * size, c1 * size)
    local = ((np.arange(size) + 0.5 - size / 2) * (um / FIBRE_STEP_UM)).astype(np.float32)
    fibres = scene.maps["fibres"].astype(np.float32)
    out = np.empty((y1 - y0, (c1 - c0) * size), dtype=np.float32)
    for r in range(y0 // size, -(-y1 // size)):
        top, bottom = max(y0, r * size), min(y1, (r + 1) * size)  # canvas rows of voxel row r
        blocks = (bottom - top, c1 - c0, size)
        theta = scene.maps["orientation"][r, c0:c1]
        cos = np.cos(theta).astype(np.float32)[None, :, None]
        sin = np.sin(theta).astype(np.float32)[None, :, None]
        off = (scene.fibre_offset[r, c0:c1] / FIBRE_STEP_UM).astype(np.float32)[None, :, None]
        # distance across the fibres from the voxel centre (in profile steps), plus the voxel's offset
        pos = local[top - r * size : bottom - r * size, None, None] * cos - local[None, None, :] * sin + off
        fib = scene.fibre_profile.take(pos.astype(np.int32), mode="clip")  # (rows, C, S)
        fib -= np.float32(0.5)
        streak = scene.streak[top:bottom, cols].reshape(blocks) * np.float32(0.8)
        streak += np.float32(0.6)
        fib *= streak
        fib += np.float32(0.5)
        tex = scene.tex[top:bottom, cols].reshape(blocks)
        fib -= tex
        fib *= fibres[r, c0:c1, None]
        fib += tex
        out[top - y0 : bottom - y0] = fib.reshape(bottom - top, -1)
    return out[:, x0 - c0 * size : x1 - c0 * size]


def render_window(scene: Scene, canvas: Canvas, origin: tuple[int, int]) -> np.ndarray:
    """Beer-Lambert RGB of a composed window (blur at the scene's resolution, its noise)."""
    y0, x0 = origin
    h, w = canvas.labels.shape
    noise = scene.noise[:, y0 : y0 + h, x0 : x0 + w] - np.float32(0.5)  # grey levels, sd noise_gray
    noise *= np.float32(np.sqrt(12.0) * scene.profile.noise_gray)
    return draw.render_rgb(
        canvas.conc, scene.profile.stains_od, scene.profile.background, scene.blur_px, noise
    )
