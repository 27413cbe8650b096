"""Drawing primitives of the H&E phantom: smooth random fields, vectorised ellipse
rasterisation, Beer-Lambert stain rendering, patch cutting and a montage for eyeballing.

Pixel ``(y, x)`` covers the half-open box ``[x, x+1) x [y, y+1)``; its centre is
``(x + 0.5, y + 0.5)``. An ellipse covers a pixel when the pixel centre lies inside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage, special

from histoxai.data.store import MASK_CLASSES
from histoxai.io import atomic_path

# Optical-density unit vectors (R, G, B) of haematoxylin and eosin: the reference stain
# matrix of Macenko et al. (2009) as used by torchstain; RBC is the OD of bright red
# erythrocytes (about RGB 215, 40, 55 on white).
HAEMATOXYLIN_OD = np.array([0.5626, 0.7201, 0.4062])
EOSIN_OD = np.array([0.2159, 0.8012, 0.5581])
RBC_OD = np.array([0.055, 0.770, 0.636])

STROMA, NUCLEI, AIR, DISTRACTOR = range(len(MASK_CLASSES))
RBC_RADIUS_UM = 3.6
RBC_CLUSTERS_PER_MM2 = 25.0
DEBRIS_PER_MM2 = 200.0

# Montage overlay colours per mask class (stroma, nuclei, air, distractor); None = no tint.
OVERLAY_RGB: tuple[tuple[int, int, int] | None, ...] = (None, (0, 220, 255), (255, 230, 0), (255, 0, 0))


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """A stationary random field with uniform marginals on [0, 1) and correlation
    length ``sigma_px``, float32 of ``shape``.

    White noise is smoothed on a grid coarsened by up to ``sigma/2`` (cheap for large
    sigma), upsampled bilinearly, standardised and pushed through the normal CDF.
    """
    step = max(1, int(sigma_px // 2))
    small = (-(-shape[0] // step) + 2, -(-shape[1] // step) + 2)
    noise = ndimage.gaussian_filter(
        rng.standard_normal(small, dtype=np.float32), sigma_px / step, mode="wrap"
    )
    if step > 1:
        noise = ndimage.zoom(noise, step, order=1, prefilter=False)
    noise = noise[: shape[0], : shape[1]]
    noise = (noise - noise.mean()) / max(float(noise.std()), 1e-12)
    return special.ndtr(noise).astype(np.float32)


def unit_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """A smooth field min-max scaled to exactly span [0, 1] (float64)."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return (f - f.min()) / max(float(np.ptp(f)), 1e-12)


def upsample(grid: np.ndarray, factor: int) -> np.ndarray:
    """Bilinear upsampling of a voxel map to pixels, (R, C) -> (R*factor, C*factor)."""
    out = ndimage.zoom(grid.astype(np.float32), factor, order=1, mode="nearest", grid_mode=True)
    return out[: grid.shape[0] * factor, : grid.shape[1] * factor]


def ellipse_pixels(
    cx: np.ndarray,
    cy: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    angle: np.ndarray,
    shape: tuple[int, int],
    chunk: int = 2048,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixels covered by filled ellipses, tested on a bounding window per ellipse.

    Args:
        cx, cy: centres (px, canvas coordinates).
        a, b: semi-axes (px) along ``angle`` and across it.
        angle: orientation of the ``a`` axis (rad, counter-clockwise from +x in image
            coordinates, i.e. y pointing down).
        shape: canvas (H, W); pixels outside are dropped.
        chunk: ellipses tested at once (bounds memory).

    Returns:
        ``(k, ys, xs, rho2)``: ellipse index, pixel row and column, and the normalised
        squared radius (0 at the centre, 1 on the rim) of every covered pixel.
    """
    n = len(cx)
    if n == 0:
        e = np.empty(0, dtype=np.int64)
        return e, e, e, np.empty(0, dtype=np.float32)
    r = int(np.ceil(max(float(a.max()), float(b.max())))) + 1
    off = np.arange(-r, r + 1)
    parts = []
    for s in range(0, n, chunk):
        sl = slice(s, s + chunk)
        x0, y0 = np.floor(cx[sl]).astype(np.int64), np.floor(cy[sl]).astype(np.int64)
        dx = (x0[:, None, None] + off[None, None, :] + 0.5 - cx[sl, None, None]).astype(np.float32)
        dy = (y0[:, None, None] + off[None, :, None] + 0.5 - cy[sl, None, None]).astype(np.float32)
        cos = np.cos(angle[sl]).astype(np.float32)[:, None, None]
        sin = np.sin(angle[sl]).astype(np.float32)[:, None, None]
        u = (dx * cos + dy * sin) / a[sl, None, None].astype(np.float32)
        v = (dy * cos - dx * sin) / b[sl, None, None].astype(np.float32)
        rho2 = u * u + v * v  # (m, K, K)
        k, iy, ix = np.nonzero(rho2 <= 1.0)
        ys, xs = y0[k] + off[iy], x0[k] + off[ix]
        ok = (ys >= 0) & (ys < shape[0]) & (xs >= 0) & (xs < shape[1])
        parts.append((k[ok] + s, ys[ok], xs[ok], rho2[k[ok], iy[ok], ix[ok]]))
    return tuple(np.concatenate(p) for p in zip(*parts))  # type: ignore[return-value]


def render_rgb(
    conc: np.ndarray,
    stains_od: np.ndarray,
    background: np.ndarray,
    blur_px: float,
    noise_gray: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Beer-Lambert rendering: ``I = background * exp(-sum_s conc_s * od_s)``, then a
    Gaussian blur (optics) and additive Gaussian noise (sensor), as uint8.

    Args:
        conc: (S, H, W) stain concentrations (optical density units).
        stains_od: (S, 3) OD vector of each stain.
        background: (3,) white level in [0, 1].
        blur_px: sigma of the optical blur (px).
        noise_gray: sd of the sensor noise (grey levels of 255).
        rng: noise source.

    Returns:
        (H, W, 3) uint8 image.
    """
    od = np.tensordot(conc, stains_od.astype(np.float32), axes=(0, 0))  # (H, W, 3)
    rgb = np.exp(-od) * (255.0 * background.astype(np.float32))
    if blur_px > 0:
        rgb = ndimage.gaussian_filter(rgb, (blur_px, blur_px, 0), mode="reflect")
    rgb += rng.standard_normal(rgb.shape, dtype=np.float32) * np.float32(noise_gray)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def paint_distractors(
    labels: np.ndarray, conc: np.ndarray, um_per_px: float, rng: np.random.Generator
) -> None:
    """RBC clusters (red discs with pale centres) and dark debris specks, over stroma only."""
    area_mm2 = labels.size * (um_per_px / 1000) ** 2
    n_clusters = rng.poisson(RBC_CLUSTERS_PER_MM2 * area_mm2)
    per = 3 + rng.poisson(8, n_clusters)
    centre = np.repeat(rng.random((n_clusters, 2)) * labels.shape[::-1], per, axis=0)
    spread = np.repeat(rng.uniform(4, 10, n_clusters), per)[:, None] / um_per_px
    xy = centre + rng.standard_normal(centre.shape) * spread
    r = np.maximum(RBC_RADIUS_UM * (1 + 0.08 * rng.standard_normal(len(xy))) / um_per_px, 0.8)
    k, ys, xs, rho2 = ellipse_pixels(xy[:, 0], xy[:, 1], r, r, np.zeros(len(r)), labels.shape)
    free = labels[ys, xs] == STROMA
    ys, xs, rho2 = ys[free], xs[free], rho2[free]
    conc[:, ys, xs] = 0.0
    conc[2, ys, xs] = rng.uniform(1.8, 2.4) * (0.6 + 0.4 * rho2)  # pale biconcave centre
    conc[1, ys, xs] = 0.1
    labels[ys, xs] = DISTRACTOR

    n_debris = rng.poisson(DEBRIS_PER_MM2 * area_mm2)
    xy = rng.random((n_debris, 2)) * labels.shape[::-1]
    r = np.maximum(rng.uniform(0.6, 1.5, n_debris) / um_per_px, 0.8)
    k, ys, xs, _ = ellipse_pixels(
        xy[:, 0],
        xy[:, 1],
        r * rng.uniform(1, 1.6, n_debris),
        r,
        rng.uniform(0, np.pi, n_debris),
        labels.shape,
    )
    free = labels[ys, xs] == STROMA
    conc[0, ys[free], xs[free]] = 2.4
    conc[1, ys[free], xs[free]] = 1.4
    labels[ys[free], xs[free]] = DISTRACTOR


def cut_patches(canvas: np.ndarray, size: int) -> np.ndarray:
    """(R*size, C*size, ...) -> (R*C, size, size, ...), row-major over voxels."""
    rows, cols = canvas.shape[0] // size, canvas.shape[1] // size
    tail = canvas.shape[2:]
    out = canvas.reshape(rows, size, cols, size, *tail).swapaxes(1, 2)
    return np.ascontiguousarray(out.reshape(rows * cols, size, size, *tail))


def overlay_masks(images: np.ndarray, masks: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Tint ``images`` (n, H, W, 3) uint8 by their mask classes (``OVERLAY_RGB``)."""
    out = images.astype(np.float32)
    for label, colour in enumerate(OVERLAY_RGB):
        if colour is None:
            continue
        sel = masks == label
        out[sel] = (1 - alpha) * out[sel] + alpha * np.asarray(colour, np.float32)
    return out.astype(np.uint8)


def save_montage(blocks: Sequence, path: str | Path, per_sample: int = 6, scale: int = 2) -> Path:
    """Save a PNG with one row per sample: ``per_sample`` patches, each followed by its
    mask overlay (cyan nuclei, yellow air, red distractors), upscaled ``scale`` times.

    Args:
        blocks: ``SampleBlock`` s (masks optional; without them no overlay column).
        path: PNG to write (atomically).
        per_sample: patches per sample, evenly spaced over the block.
        scale: nearest-neighbour upscaling factor.

    Returns:
        ``path``.
    """
    from PIL import Image

    rows = []
    for block in blocks:
        pick = np.linspace(0, len(block.images) - 1, per_sample).round().astype(int)
        imgs = block.images[pick]
        tiles = [imgs] if block.masks is None else [imgs, overlay_masks(imgs, block.masks[pick])]
        cells = np.stack(tiles, axis=1).reshape(-1, *imgs.shape[1:])  # image, overlay, image, ...
        cells = np.pad(cells, ((0, 0), (2, 2), (2, 2), (0, 0)), constant_values=255)
        rows.append(np.concatenate(list(cells), axis=1))
    grid = np.concatenate(rows, axis=0).repeat(scale, 0).repeat(scale, 1)
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    return path
