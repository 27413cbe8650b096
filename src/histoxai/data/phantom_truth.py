"""Ground truth for explanations of phantom regressors, derived from the generating formulas.

- :func:`signed_truth`: per-pixel signed influence on a target, positive where the
  pixel's content raises it. ``md``/``fa``: the change of the clean target when the pixel
  is replaced by plain (fibre-free, isotropic) stroma, ``T(patch) - T(patch with pixel p
  := D_STROMA I)``, computed exactly from the patch-mean tensor (``phantom.FORMULAS``):
  nuclei are negative for MD (``(D_NUC - D_STROMA) / P^2``), air positive; for FA,
  nuclei and fibres aligned with the patch's main direction are positive, air and
  misaligned objects negative. ``cc``: ``1 / visible_px`` on every pixel of a counted
  nucleus (so a patch's map sums to its ``cc``), 0 elsewhere; uncounted nuclei and
  distractors are 0 for every target.
- :func:`ablate`: the interventional truth. A patch is re-rendered from its sample's
  seed without one object (a nucleus, an RBC cluster, an air blob); every random draw is
  made before composing (``phantom_scene``), so the re-rendered patch is in
  distribution and differs from the original only where the object and its blur were.
  Each record carries the exact change of the clean targets.

The maps are at the store's patch resolution; with ``um_per_px`` rendering at another
resolution the instance and class masks were resized (nearest), so the truth is exact
at the rendering resolution and nearest-resampled in the store.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import ndimage

from histoxai.config import PhantomConfig, parse
from histoxai.data import phantom as ph
from histoxai.data import phantom_draw as draw
from histoxai.data.phantom_draw import AIR, DISTRACTOR
from histoxai.data.phantom_scene import Scene, compose, render_window

TRUTH_TARGETS = ("md", "fa", "cc")
ABLATION_KINDS = ("nucleus", "distractor", "air")


def signed_truth(
    target: str,
    masks: np.ndarray,
    instances: np.ndarray,
    nuclei: pd.DataFrame,
    patches: pd.DataFrame | None = None,
) -> np.ndarray:
    """Signed per-pixel ground-truth influence of each pixel's content on ``target``.

    Args:
        target: ``md``, ``fa`` or ``cc``.
        masks: (N, P, P) mask labels (``MASK_CLASSES``).
        instances: (N, P, P) nucleus instance ids (``PatchStore.instances``).
        nuclei: ``table("nuclei")`` rows of these patches (``patch_id, nucleus, counted,
            elongation, orientation_rad``; other rows are ignored).
        patches: the store's index rows of the N patches, in the same order (``patch_id,
            fibre_strength, fibre_angle``); needed for ``md`` and ``fa``. For ``cc``
            without it, the N patches are the distinct ``patch_id`` of ``nuclei`` in order.

    Returns:
        (N, P, P) float32, in target units per pixel (``md``: um^2/ms; ``cc``: nuclei).
    """
    if target not in TRUTH_TARGETS:
        raise ValueError(f"target {target!r}: expected one of {TRUTH_TARGETS}")
    n = len(masks)
    if masks.shape != instances.shape:
        raise ValueError(f"masks {masks.shape} and instances {instances.shape} differ in shape")
    if patches is not None:
        ids = patches["patch_id"].to_numpy()
    elif target == "cc":
        ids = np.unique(nuclei["patch_id"].to_numpy())
    else:
        raise ValueError(
            f"signed_truth({target!r}): pass `patches` (index rows with fibre_strength, fibre_angle)"
        )
    if len(ids) != n:
        raise ValueError(f"{len(ids)} patch ids for {n} masks: pass `patches` in the order of the masks")
    pos = pd.Series(np.arange(n), index=ids)
    rows = nuclei[nuclei["patch_id"].isin(ids)]
    where = pos[rows["patch_id"]].to_numpy()
    top = int(max(instances.max(), rows["nucleus"].max() if len(rows) else 0)) + 1
    at = np.arange(n)[:, None, None]
    if target == "cc":
        visible = np.stack([np.bincount(i.ravel(), minlength=top) for i in instances]).astype(np.float64)
        per = np.zeros((n, top))
        c = rows["counted"].to_numpy(bool)
        nucleus = rows["nucleus"].to_numpy()
        per[where[c], nucleus[c]] = 1.0 / np.maximum(visible[where[c], nucleus[c]], 1)
        per[:, 0] = 0.0
        return per[at, instances].astype(np.float32)
    k, t = np.zeros((n, top)), np.zeros((n, top))
    e = rows["elongation"].to_numpy(float)
    k[where, rows["nucleus"]] = ph.K_NUC * (e - 1) / (e + 1)
    t[where, rows["nucleus"]] = rows["orientation_rad"].to_numpy(float)
    fibre = patches[["fibre_strength", "fibre_angle"]].to_numpy(float)  # type: ignore[index]
    m, q, r = ph.tensor_fields(
        masks,
        k[at, instances],
        t[at, instances],
        ph.K_FIBRE * fibre[:, 0, None, None],
        fibre[:, 1, None, None],
    )
    area = masks.shape[1] * masks.shape[2]
    dm = (m - ph.D_STROMA) / area
    if target == "md":
        return dm.astype(np.float32)
    mm, qq, rr = (x.mean(axis=(1, 2))[:, None, None] for x in (m, q, r))
    return (ph.fa_from_tensor(mm, qq, rr) - ph.fa_from_tensor(mm - dm, qq - q / area, rr - r / area)).astype(
        np.float32
    )


class Ablation(NamedTuple):
    """One re-rendered patch without one object."""

    patch_id: int
    kind: str  # "nucleus", "distractor" (an RBC cluster) or "air" (a connected air blob)
    object_id: int  # nucleus: its instance id in the patch; distractor: cluster index; air: blob label
    image: np.ndarray  # (P, P, 3) uint8, the patch without the object
    object_mask: np.ndarray  # (P, P) bool, the object's pixels in the original patch
    delta: dict[str, float]  # exact change of md_clean, fa_clean and cc (ablated - original)


def ablate(
    store_dir_or_cfg: str | Path | tuple[PhantomConfig, int, int],
    patch_ids: Iterable[int],
    seed: int = 0,
    kinds: Sequence[str] = ABLATION_KINDS,
    max_objects: int = 0,
) -> Iterator[Ablation]:
    """Re-render patches without one object at a time (in-distribution interventions).

    Args:
        store_dir_or_cfg: a phantom patch store directory (its card holds the phantom's
            parameters, seed and patch size), or ``(PhantomConfig, patch_size_px, seed)``
            of a phantom generated by ``generate_phantom`` (ids in generation order).
        patch_ids: patches to intervene on.
        seed: draws which objects are kept when ``max_objects`` limits them.
        kinds: object kinds, any of ``ABLATION_KINDS``.
        max_objects: at most this many objects per kind and patch (0: all).

    Yields:
        :class:`Ablation` records, patch by patch (deterministic for the same arguments).
    """
    cfg, size, gen_seed = _phantom_of(store_dir_or_cfg)
    bad = set(kinds) - set(ABLATION_KINDS)
    if bad:
        raise ValueError(f"unknown ablation kinds {sorted(bad)}; expected some of {ABLATION_KINDS}")
    n_vox = cfg.grid_vox[0] * cfg.grid_vox[1]
    pick = np.random.default_rng(seed)
    scenes: dict[int, Scene] = {}
    for pid in (int(p) for p in patch_ids):
        sample, offset = divmod(pid, n_vox)
        if not 0 <= sample < cfg.n_samples:
            raise IndexError(f"patch id {pid} out of range 0..{cfg.n_samples * n_vox - 1}")
        if sample not in scenes:
            scenes.clear()  # one sample's scene in memory at a time
            scenes[sample] = ph.sample_scene(cfg, size, gen_seed, sample)
        yield from _ablate_patch(scenes[sample], pid, offset, size, kinds, max_objects, pick)


def _phantom_of(source) -> tuple[PhantomConfig, int, int]:
    if isinstance(source, tuple):
        return source
    card_path = Path(source) / "card.json"
    card = json.loads(card_path.read_text())
    if card.get("source") != "phantom":
        raise ValueError(f"{card_path}: source {card.get('source')!r} is not the phantom; nothing to ablate")
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in card["params"].items()}
    return parse(PhantomConfig, params), int(card["patch_size_px"]), int(card["seed"])


def _ablate_patch(scene: Scene, pid, offset, out_size, kinds, max_objects, pick) -> Iterator[Ablation]:
    size = scene.size
    row, col = divmod(offset, scene.grid[1])
    margin = draw.blur_radius(scene.blur_px)
    h, w = scene.shape
    window = (
        max(0, row * size - margin),
        min(h, (row + 1) * size + margin),
        max(0, col * size - margin),
        min(w, (col + 1) * size + margin),
    )
    inner = (slice(row * size - window[0], (row + 1) * size - window[0]),
             slice(col * size - window[2], (col + 1) * size - window[2]))  # fmt: skip
    base = compose(scene, window)
    before = _clean_targets(scene, base, inner, offset)
    gid = base.gid[inner]
    objects: list[tuple[str, int, dict, np.ndarray]] = []
    if "nucleus" in kinds:
        present = np.unique(gid[gid > 0])
        for local, g in enumerate(present, start=1):  # instance ids follow global order
            objects.append(("nucleus", local, {"drop_nucleus": int(g - 1)}, gid == g))
    if "distractor" in kinds:
        for cluster in _clusters_in(scene, base, window, inner):
            without = compose(scene, window, drop_cluster=cluster)
            hit = (base.labels[inner] == DISTRACTOR) & (without.labels[inner] != DISTRACTOR)
            if hit.any():
                objects.append(("distractor", cluster, {"drop_cluster": cluster}, hit))
    if "air" in kinds:
        blobs, n_blobs = ndimage.label(base.labels == AIR)
        for label in np.unique(blobs[inner]):
            if label:
                objects.append(("air", int(label), {"drop_air": blobs == label}, blobs[inner] == label))
    if max_objects:
        keep = []
        for kind in ABLATION_KINDS:
            of_kind = [o for o in objects if o[0] == kind]
            if len(of_kind) > max_objects:
                of_kind = [of_kind[i] for i in np.sort(pick.choice(len(of_kind), max_objects, replace=False))]
            keep += of_kind
        objects = keep
    for kind, object_id, drop, mask in objects:
        canvas = compose(scene, window, **drop)
        image = _patch_image(scene, canvas, window, inner, pid, out_size)
        after = _clean_targets(scene, canvas, inner, offset)
        delta = {t: after[t] - before[t] for t in before}
        if out_size != size:
            mask = _resize_mask(mask, out_size)
        yield Ablation(pid, kind, object_id, image, mask, delta)


def original_patch(store_dir_or_cfg, patch_id: int) -> np.ndarray:
    """The patch as :func:`ablate` re-renders it with nothing removed (equals the stored one)."""
    cfg, size, gen_seed = _phantom_of(store_dir_or_cfg)
    n_vox = cfg.grid_vox[0] * cfg.grid_vox[1]
    sample, offset = divmod(int(patch_id), n_vox)
    scene = ph.sample_scene(cfg, size, gen_seed, sample)
    row, col = divmod(offset, scene.grid[1])
    margin = draw.blur_radius(scene.blur_px)
    h, w = scene.shape
    s = scene.size
    window = (max(0, row * s - margin), min(h, (row + 1) * s + margin),
              max(0, col * s - margin), min(w, (col + 1) * s + margin))  # fmt: skip
    inner = (
        slice(row * s - window[0], (row + 1) * s - window[0]),
        slice(col * s - window[2], (col + 1) * s - window[2]),
    )
    return _patch_image(scene, compose(scene, window), window, inner, int(patch_id), size)


def _patch_image(scene: Scene, canvas, window, inner, pid, out_size) -> np.ndarray:
    rgb = render_window(scene, canvas, (window[0], window[2]))[inner][None]
    if scene.cfg.shortcut:
        table = _clean_targets(scene, canvas, inner, pid % (scene.grid[0] * scene.grid[1]))
        md = table["md"] + scene.cfg.noise_sd_md * scene.label_noise[0][pid % (scene.grid[0] * scene.grid[1])]
        ph.draw_shortcut(rgb, np.array([scene.cfg.shortcut_strength * np.clip((md - 0.3) / 1.0, 0, 1)]))
    if out_size != scene.size:
        rgb = ph.resize_patches(
            rgb, np.zeros(rgb.shape[:3], np.uint8), np.zeros(rgb.shape[:3], np.int32), out_size
        )[0]
    return rgb[0]


def _resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(mask.astype(np.uint8)).resize((size, size), Image.NEAREST)).astype(bool)


def _clusters_in(scene: Scene, base, window, inner) -> list[int]:
    """RBC clusters with a cell whose disc reaches the patch."""
    obj = scene.distractors
    y0, x0 = window[0] + inner[0].start, window[2] + inner[1].start
    near = draw._near(obj["rbc_x"] - x0, obj["rbc_y"] - y0, obj["rbc_r"], (scene.size, scene.size))
    return sorted(int(c) for c in np.unique(obj["rbc_cluster"][near]))


def _clean_targets(scene: Scene, canvas, inner, offset: int) -> dict[str, float]:
    """Clean md, fa and cc of the patch ``inner`` of a composed window (``FORMULAS``)."""
    labels, gid = canvas.labels[inner], canvas.gid[inner]
    area = labels.size
    frac = {
        "nuclei": np.array([(labels == ph.NUCLEI).sum() / area]),
        "air": np.array([(labels == AIR).sum() / area]),
    }
    frac["stroma"] = 1.0 - frac["nuclei"] - frac["air"]
    g, visible = np.unique(gid[gid > 0], return_counts=True)
    i = g - 1
    nuc = scene.nuc
    table = pd.DataFrame(
        {
            "offset": np.zeros(len(g), dtype=np.int64),
            "visible_px": visible.astype(float),
            "patch_px": scene.size,
            "a": nuc["a"][i],
            "b": nuc["b"][i],
            "orientation_rad": nuc["angle"][i],
        }
    )
    fibres = scene.maps["fibres"].ravel()[offset : offset + 1]
    angle = scene.maps["orientation"].ravel()[offset : offset + 1]
    m, q, r = ph.voxel_tensor(frac, table, fibres, angle)
    cc = int((visible > ph.CC_VISIBLE * nuc["area_px"][i]).sum())
    return {"md": float(m[0]), "fa": float(ph.fa_from_tensor(m, q, r)[0]), "cc": float(cc)}
