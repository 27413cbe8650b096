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
RBC_PER_CLUSTER = 5.0  # mean red cells per cluster
RBC_CLUSTER_UM2 = 160.0  # mean area one cluster covers (overlaps counted once)
DEBRIS_UM2 = 4.5  # mean area of one debris speck
RBC_SHARE = 0.7  # share of the distractor area that is red cells

# Montage overlay colours per mask class (stroma, nuclei, air, distractor); None = no tint.
OVERLAY_RGB: tuple[tuple[int, int, int] | None, ...] = (None, (0, 220, 255), (255, 230, 0), (255, 0, 0))


def smooth_field(
    rng: np.random.Generator, shape: tuple[int, int], sigma_px: float, uniform: bool = True
) -> np.ndarray:
    """A stationary random field with correlation length ``sigma_px``, float32 of ``shape``
    in [0, 1].

    Uniform white noise is smoothed on a grid coarsened by ``floor(sigma)`` (cheap for
    large sigma; by the central limit theorem the result is close to Gaussian), upsampled
    bilinearly and standardised. ``uniform``: push it through the normal CDF so the
    marginal is uniform (a threshold at ``f`` keeps a share ``f``); else ``0.5 + z/4``
    clipped (a texture, cheaper).
    """
    step = max(1, int(sigma_px))
    small = (-(-shape[0] // step) + 2, -(-shape[1] // step) + 2)
    noise = ndimage.gaussian_filter(rng.random(small, dtype=np.float32), sigma_px / step, mode="wrap")
    mean, sd = float(noise.mean()), max(float(noise.std()), 1e-12)
    if step > 1:
        noise = _upsample_linear(_upsample_linear(noise, step, 0), step, 1)
    noise = noise[: shape[0], : shape[1]]
    noise -= np.float32(mean)
    if uniform:
        noise /= np.float32(sd)
        return special.ndtr(noise, out=noise)
    noise *= np.float32(1 / (4 * sd))
    noise += np.float32(0.5)
    return np.clip(noise, 0, 1, out=noise)


def pixel_hash(ys: np.ndarray, xs: np.ndarray, salt: float) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per canvas pixel (a per-pixel grain that
    costs nothing where nothing is drawn and is the same whatever else is drawn)."""
    v = ys * 12.9898  # float64; in place below: same operations as sin(y a + x b + salt) c mod 1
    v += xs * 78.233
    v += salt
    np.sin(v, out=v)
    v *= 43758.5453
    v -= np.floor(v)
    return v.astype(np.float32)


def _upsample_linear(a: np.ndarray, f: int, axis: int) -> np.ndarray:
    """Linear interpolation between neighbours along ``axis`` (0 or 1 of a 2-D array) at
    ``f`` points per step: ``out[f*i + j] = a[i] + (a[i+1] - a[i]) j / f``."""
    t = np.arange(f, dtype=a.dtype) / a.dtype.type(f)
    if axis == 0:
        lo = a[:-1, None, :]
        out = (a[1:, None, :] - lo) * t[None, :, None]
        out += lo
        return out.reshape(-1, a.shape[1])
    lo = a[:, :-1, None]
    step = a[:, 1:, None] - lo
    out = np.empty((a.shape[0], a.shape[1] - 1, f), dtype=a.dtype)
    if f > a.shape[1]:  # few columns, many phases: broadcast (inner loops over phases)
        np.multiply(step, t[None, None, :], out=out)
        out += lo
    else:  # few phases: one pass per phase (inner loops over columns; same arithmetic)
        for j in range(f):
            np.multiply(step, t[j], out=out[:, :, j : j + 1])
            out[:, :, j : j + 1] += lo
    return out.reshape(a.shape[0], -1)


def unit_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """A smooth field min-max scaled to exactly span [0, 1] (float64)."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return (f - f.min()) / max(float(np.ptp(f)), 1e-12)


def upsample(grid: np.ndarray, factor: int) -> np.ndarray:
    """Bilinear upsampling of a voxel map to pixels, (R, C) -> (R*factor, C*factor)."""
    padded = np.pad(grid.astype(np.float32), 1, mode="edge")
    out = _upsample_linear(_upsample_linear(padded, factor, 0), factor, 1)
    h = factor // 2  # voxel centres land on their pixel block's centre
    return out[h : h + grid.shape[0] * factor, h : h + grid.shape[1] * factor]


def ellipse_pixels(
    cx: np.ndarray,
    cy: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    angle: np.ndarray,
    shape: tuple[int, int],
    chunk_px: int = 1 << 17,
    area: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixels covered by filled ellipses, tested on a bounding window per ellipse.

    Args:
        cx, cy: centres (px, canvas coordinates).
        a, b: semi-axes (px) along ``angle`` and across it.
        angle: orientation of the ``a`` axis (rad, counter-clockwise from +x in image
            coordinates, i.e. y pointing down).
        shape: canvas (H, W); pixels outside are dropped.
        chunk_px: window pixels tested at once (bounds memory; many small ellipses per step).
        area: if given, an (n,) int array that receives each ellipse's pixel count
            before clipping to ``shape`` (its whole area on an unbounded canvas).

    Returns:
        ``(k, ys, xs, rho2)``: ellipse index, pixel row and column, and the normalised
        squared radius (0 at the centre, 1 on the rim) of every covered pixel, grouped
        by radius class ``ceil(max(a, b))`` (ascending) and by index within a class:
        painting in this order, larger ellipses cover smaller ones and, within a class,
        later ones cover earlier ones.
    """
    n = len(cx)
    if area is not None:
        area[:] = 0
    if n == 0:
        e = np.empty(0, dtype=np.int64)
        return e, e, e, np.empty(0, dtype=np.float32)
    radius = np.ceil(np.maximum(a, b)).astype(np.int64) + 1
    parts = []
    for r in np.unique(radius):  # windows sized per radius class: small ellipses test few pixels
        members = np.flatnonzero(radius == r)
        # a covered pixel centre is within max(a, b) <= r - 1 of the centre, so within
        # r - 1 pixels of floor(centre) (the next pixel out is >= max(a, b) + 0.5 away)
        off = np.arange(1 - r, r)
        step = max(1, chunk_px // len(off) ** 2)
        for s in range(0, len(members), step):
            sl = members[s : s + step]
            x0, y0 = np.floor(cx[sl]).astype(np.int64), np.floor(cy[sl]).astype(np.int64)
            dx = (x0[:, None, None] + off[None, None, :] + 0.5 - cx[sl, None, None]).astype(np.float32)
            dy = (y0[:, None, None] + off[None, :, None] + 0.5 - cy[sl, None, None]).astype(np.float32)
            cos = np.cos(angle[sl]).astype(np.float32)[:, None, None]
            sin = np.sin(angle[sl]).astype(np.float32)[:, None, None]
            u = dx * cos + dy * sin  # (m, K, K)
            u /= a[sl, None, None].astype(np.float32)
            v = dy * cos - dx * sin
            v /= b[sl, None, None].astype(np.float32)
            rho2 = np.multiply(u, u, out=u)
            rho2 += np.multiply(v, v, out=v)
            inside = rho2 <= 1.0
            if area is not None:
                area[sl] = np.count_nonzero(inside, axis=(1, 2))
            cut = (y0 < r - 1) | (y0 + r - 1 >= shape[0]) | (x0 < r - 1) | (x0 + r - 1 >= shape[1])
            if cut.any():  # windows reaching off the canvas keep only their pixels on it
                wy, wx = y0[cut, None, None] + off[None, :, None], x0[cut, None, None] + off[None, None, :]
                inside[cut] &= (wy >= 0) & (wy < shape[0]) & (wx >= 0) & (wx < shape[1])
            k, iy, ix = np.nonzero(inside)
            parts.append((sl[k], y0[k] + off[iy], x0[k] + off[ix], rho2[inside]))
    return tuple(np.concatenate(p) for p in zip(*parts))  # type: ignore[return-value]


def render_rgb(
    conc: np.ndarray,
    stains_od: np.ndarray,
    background: np.ndarray,
    blur_px: float,
    noise: np.ndarray,
) -> np.ndarray:
    """Beer-Lambert rendering: ``I = background * exp(-sum_s conc_s * od_s)``, then a
    Gaussian blur (optics) and additive sensor noise, as uint8.

    Args:
        conc: (S, H, W) stain concentrations (optical density units).
        stains_od: (S, 3) OD vector of each stain.
        background: (3,) white level in [0, 1].
        blur_px: sigma of the optical blur (px).
        noise: (3, H, W) sensor noise in grey levels of 255 (drawn by the caller).

    Returns:
        (H, W, 3) uint8 image.
    """
    s, h, w = conc.shape
    od = (-stains_od.astype(np.float32)).T @ conc.reshape(s, -1)  # (3, H*W), negated OD
    np.exp(od, out=od)
    od *= (255.0 * background).astype(np.float32)[:, None]
    planes = od.reshape(3, h, w)
    if blur_px >= 0.25:  # below a quarter pixel the blur changes nothing visible
        blurred = np.empty_like(planes)
        for p, out in zip(planes, blurred):  # plane by plane (contiguous: faster than one 3-D call)
            ndimage.gaussian_filter(p, blur_px, mode="reflect", output=out)
        planes = blurred
    planes += noise
    planes += np.float32(0.5)  # round half up, then truncate
    np.clip(planes, 0, 255.49, out=planes)
    return np.ascontiguousarray(planes.astype(np.uint8).transpose(1, 2, 0))


def blur_radius(blur_px: float) -> int:
    """Pixels the optical blur of ``render_rgb`` reaches (scipy's 4-sigma truncation)."""
    return int(4.0 * blur_px + 0.5) + 1 if blur_px >= 0.25 else 0


def draw_distractors(
    rng: np.random.Generator, shape: tuple[int, int], um_per_px: float, density: float
) -> dict[str, np.ndarray]:
    """Random RBC clusters and debris specks over a canvas of ``shape`` (not yet painted).

    ``density`` is the expected share of the canvas the objects cover before they are
    restricted to stroma: ``RBC_SHARE`` of it red cells in clusters, the rest debris.

    Returns:
        ``rbc_x, rbc_y, rbc_r, rbc_cluster, rbc_level`` (one entry per red cell, level per
        cluster) and ``debris_x, debris_y, debris_a, debris_b, debris_angle``, all in px.
    """
    area_um2 = shape[0] * shape[1] * um_per_px**2
    n_clusters = rng.poisson(RBC_SHARE * density * area_um2 / RBC_CLUSTER_UM2)
    per = 2 + rng.poisson(RBC_PER_CLUSTER - 2, n_clusters)
    centre = np.repeat(rng.random((n_clusters, 2)) * shape[::-1], per, axis=0)
    spread = np.repeat(rng.uniform(3, 7, n_clusters), per)[:, None] / um_per_px
    xy = centre + rng.standard_normal(centre.shape) * spread
    r = np.maximum(RBC_RADIUS_UM * (1 + 0.08 * rng.standard_normal(len(xy))) / um_per_px, 0.8)
    level = rng.uniform(1.8, 2.4, n_clusters)
    n_debris = rng.poisson((1 - RBC_SHARE) * density * area_um2 / DEBRIS_UM2)
    dxy = rng.random((n_debris, 2)) * shape[::-1]
    dr = np.maximum(rng.uniform(0.6, 1.5, n_debris) / um_per_px, 0.8)
    return {
        "rbc_x": xy[:, 0],
        "rbc_y": xy[:, 1],
        "rbc_r": r,
        "rbc_cluster": np.repeat(np.arange(n_clusters), per),
        "rbc_level": level,
        "debris_x": dxy[:, 0],
        "debris_y": dxy[:, 1],
        "debris_a": dr * rng.uniform(1, 1.6, n_debris),
        "debris_b": dr,
        "debris_angle": rng.uniform(0, np.pi, n_debris),
    }


def paint_distractors(
    labels: np.ndarray,
    conc: np.ndarray,
    objects: dict[str, np.ndarray],
    origin: tuple[int, int] = (0, 0),
    drop_cluster: int = -1,
    drop_debris: int = -1,
) -> None:
    """Paint ``draw_distractors`` objects over the stroma pixels of a canvas window (in place).

    Args:
        labels, conc: (H, W) labels and (3, H, W) concentrations of the window.
        objects: from :func:`draw_distractors` (canvas coordinates).
        origin: canvas (y, x) of the window's top-left pixel.
        drop_cluster, drop_debris: index of an RBC cluster / debris speck to leave out (-1: none).
    """
    y0, x0 = origin
    keep = (objects["rbc_cluster"] != drop_cluster) & _near(
        objects["rbc_x"] - x0, objects["rbc_y"] - y0, objects["rbc_r"], labels.shape
    )
    k, ys, xs, rho2 = ellipse_pixels(
        objects["rbc_x"][keep] - x0,
        objects["rbc_y"][keep] - y0,
        objects["rbc_r"][keep],
        objects["rbc_r"][keep],
        np.zeros(int(keep.sum())),
        labels.shape,
    )
    if not (labels.flags.c_contiguous and conc.flags.c_contiguous):
        raise ValueError("paint_distractors paints in place: labels and conc must be C-contiguous")
    flat_labels, flat_conc = labels.reshape(-1), conc.reshape(3, -1)  # views: 1-D scatters are cheaper
    at = ys * labels.shape[1] + xs
    free = flat_labels[at] == STROMA
    k, at, rho2 = k[free], at[free], rho2[free]
    level = objects["rbc_level"][objects["rbc_cluster"][keep][k]]
    flat_conc[0, at] = 0.0
    flat_conc[1, at] = 0.1
    flat_conc[2, at] = level * (0.6 + 0.4 * rho2)  # pale biconcave centre
    flat_labels[at] = DISTRACTOR

    keep = (np.arange(len(objects["debris_x"])) != drop_debris) & _near(
        objects["debris_x"] - x0, objects["debris_y"] - y0, objects["debris_a"], labels.shape
    )
    k, ys, xs, _ = ellipse_pixels(
        objects["debris_x"][keep] - x0,
        objects["debris_y"][keep] - y0,
        objects["debris_a"][keep],
        objects["debris_b"][keep],
        objects["debris_angle"][keep],
        labels.shape,
    )
    at = ys * labels.shape[1] + xs
    at = at[flat_labels[at] == STROMA]
    flat_conc[0, at] = 2.4
    flat_conc[1, at] = 1.4
    flat_labels[at] = DISTRACTOR


def _near(x: np.ndarray, y: np.ndarray, r: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Objects of radius ``r`` centred at (x, y) that may cover a pixel of ``shape``."""
    return (x > -r - 2) & (x < shape[1] + r + 2) & (y > -r - 2) & (y < shape[0] + r + 2)


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
