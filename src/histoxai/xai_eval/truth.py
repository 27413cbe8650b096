"""Ground truth per target, from the phantom's generating functions, signed.

:class:`Truth` holds, per evaluated patch, the signed per-pixel influence of the
pixel's content on the target (positive: this content raises the target), the
instance mask of the nuclei the count counts, the uncounted nuclei and distractors,
and one row per nucleus (size, elongation, orientation, local density, border).

The phantom's own interface (``histoxai.data.phantom_truth.signed_truth`` and
``PatchStore.instances`` / ``table("nuclei")`` with a ``counted`` column) is used when
the store has it. Older stores get the *derived* truth of :func:`derived_truth`: the
counted nuclei redrawn as ellipses from the store's ``nuclei`` table (the nuclei
centred in the patch, exactly the ones ``cc`` counts) and intersected with the nuclei
mask, and the signed influence as finite differences of ``FORMULAS``:

- cc: each counted nucleus adds one count, spread evenly over its visible pixels.
- md: a nucleus pixel moves MD by md(nf, af) − md(nf − 1/N, af) (negative), an air
  pixel by md(nf, af) − md(nf, af − 1/N) (positive); stroma and distractors 0.
- fa: an air pixel by −order/N; a counted nucleus by (1 − af)(order − order without
  it), spread over its pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from histoxai.data.store import MASK_CLASSES

NUCLEUS_COLUMNS = ("patch_id", "nucleus", "counted", "area_px", "visible_px", "elongation",
                   "orientation_rad", "local_density", "border")  # fmt: skip
"""Columns of :attr:`Truth.nuclei` (the patch store's ``nuclei`` table interface)."""

NUCLEI, AIR, DISTRACTOR = (MASK_CLASSES.index(c) for c in ("nuclei", "air", "distractor"))


@dataclass
class Truth:
    """Ground truth of one target on B patches.

    Attributes:
        target: the target name.
        signed: (B, H, W) float32, positive where the pixel's content raises the target.
        instances: (B, H, W) int32, counted-nucleus id per pixel (0: none).
        uncounted: (B, H, W) bool, nuclei pixels not counted by ``cc``.
        distractor: (B, H, W) bool.
        nuclei: one row per nucleus, :data:`NUCLEUS_COLUMNS`.
        source: ``phantom_truth`` or ``derived`` (see the module docstring).
        patch_ids: (B,) the patches, in row order.
    """

    target: str
    signed: np.ndarray
    instances: np.ndarray
    uncounted: np.ndarray
    distractor: np.ndarray
    nuclei: pd.DataFrame
    source: str
    patch_ids: np.ndarray

    @property
    def region(self) -> np.ndarray:
        """(B, H, W) bool: where content raises the target (the localisation mask)."""
        return self.signed > 0


def load_truth(store, ids: np.ndarray, target: str) -> Truth | None:
    """Truth of ``target`` for patches ``ids`` of a ``PatchStore``, or None (no masks)."""
    if not store.has_masks:
        return None
    masks = store.masks(ids)
    if getattr(store, "has_instances", False):
        from histoxai.data import phantom_truth

        instances = store.instances(ids).astype(np.int32)
        nuclei = store.table("nuclei")
        nuclei = nuclei[nuclei["patch_id"].isin(ids)].reset_index(drop=True)
        signed = phantom_truth.signed_truth(target, masks, instances, nuclei).astype(np.float32)
        counted = _counted_only(instances, ids, nuclei)
        return Truth(target, signed, counted, (masks == NUCLEI) & (counted == 0), masks == DISTRACTOR,
                     nuclei, "phantom_truth", np.asarray(ids))  # fmt: skip
    index = store.index.set_index("patch_id").loc[ids]
    try:
        table = store.table("nuclei")
    except FileNotFoundError:
        table = None
    return derived_truth(target, masks, ids, table, index)


def _counted_only(instances: np.ndarray, ids: np.ndarray, nuclei: pd.DataFrame) -> np.ndarray:
    out = np.zeros_like(instances)
    for i, pid in enumerate(ids):
        keep = nuclei.loc[(nuclei["patch_id"] == pid) & nuclei["counted"], "nucleus"].to_numpy()
        sel = np.isin(instances[i], keep)
        out[i][sel] = instances[i][sel]
    return out


def derived_truth(
    target: str, masks: np.ndarray, ids: np.ndarray, table: pd.DataFrame | None, index: pd.DataFrame
) -> Truth:
    """Truth derived from the store's masks, ``nuclei`` table and index (see module doc).

    Args:
        target: ``cc``, ``md``, ``fa`` (``faip`` as ``fa``).
        masks: (B, P, P) ``MASK_CLASSES`` labels.
        ids: (B,) patch ids.
        table: the store's ``nuclei`` table (``patch_id, cx, cy, a, b, angle`` in patch
            pixels, one row per nucleus centred in the patch) or None: every connected
            nuclei component then counts.
        index: store index rows of ``ids`` (``nuclear_fraction``, ``air_fraction``).
    """
    p = masks.shape[-1]
    instances = np.zeros(masks.shape, dtype=np.int32)
    rows = []
    for i, pid in enumerate(ids):
        part = table[table["patch_id"] == pid] if table is not None else None
        instances[i], nuc = _instances(masks[i], part)
        rows.append(nuc.assign(patch_id=int(pid)))
    nuclei = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=NUCLEUS_COLUMNS)
    nuclei = nuclei.reindex(columns=[*NUCLEUS_COLUMNS, "order_drop"])
    uncounted = (masks == NUCLEI) & (instances == 0)
    signed = np.zeros(masks.shape, dtype=np.float32)
    n = float(p * p)
    for i, pid in enumerate(ids):
        nuc = nuclei[nuclei["patch_id"] == pid]
        if target == "cc":
            for k, vis in zip(nuc["nucleus"], nuc["visible_px"]):
                signed[i][instances[i] == k] = 1.0 / max(vis, 1)
            continue
        nf = float((masks[i] == NUCLEI).mean())
        af = float((masks[i] == AIR).mean())
        if target == "md":
            from histoxai.data.phantom import md_from_fractions

            md = md_from_fractions(np.array(nf), np.array(af))
            signed[i][masks[i] == NUCLEI] = md - md_from_fractions(np.array(nf - 1 / n), np.array(af))
            signed[i][masks[i] == AIR] = md - md_from_fractions(np.array(nf), np.array(af - 1 / n))
        elif target in ("fa", "faip"):
            order = _order(nuc)
            signed[i][masks[i] == AIR] = -order / n
            for k, drop, vis in zip(nuc["nucleus"], nuc["order_drop"], nuc["visible_px"]):
                signed[i][instances[i] == k] = (1 - af) * drop / max(vis, 1)
        else:
            raise ValueError(f"no ground truth for target {target!r}; expected cc, md, fa or faip")
    nuclei = nuclei.drop(columns="order_drop")
    return Truth(
        target, signed, instances, uncounted, masks == DISTRACTOR, nuclei, "derived", np.asarray(ids)
    )


def _instances(mask: np.ndarray, part: pd.DataFrame | None) -> tuple[np.ndarray, pd.DataFrame]:
    """Counted-nucleus ids (P, P) and their table rows, from ellipses or components."""
    p = mask.shape[-1]
    inst = np.zeros(mask.shape, dtype=np.int32)
    nuclear = mask == NUCLEI
    if part is None:
        from scipy import ndimage

        inst, k = ndimage.label(nuclear)
        props = [_props(inst == j + 1, p) for j in range(k)]
        frame = pd.DataFrame(props) if props else pd.DataFrame()
        frame["nucleus"] = np.arange(1, k + 1)
        frame["order_drop"] = 0.0
        return inst.astype(np.int32), _finish(frame, p)
    from histoxai.data.phantom_draw import ellipse_pixels

    cx, cy, a, bb, ang = (part[c].to_numpy(np.float64) for c in ("cx", "cy", "a", "b", "angle"))
    k, ys, xs, _ = ellipse_pixels(cx, cy, a, bb, ang, (p, p))
    inst[ys, xs] = k + 1  # later nuclei drawn over earlier ones, as the renderer does
    inst[~nuclear] = 0
    w = np.pi * a * bb
    q = w * (1 - bb / a) * np.exp(2j * ang)
    total = abs(q.sum()) / w.sum() if len(w) else 0.0
    drops = [
        total - (abs(q.sum() - q[j]) / (w.sum() - w[j]) if w.sum() - w[j] > 0 else 0.0) for j in range(len(w))
    ]
    frame = pd.DataFrame(
        {
            "nucleus": np.arange(1, len(cx) + 1),
            "cx": cx,
            "cy": cy,
            "area_px": w,
            "elongation": a / bb,
            "orientation_rad": ang,
            "border": (cx - a < 0) | (cy - a < 0) | (cx + a > p) | (cy + a > p),
            "order_drop": drops,
        }
    )
    frame["visible_px"] = np.bincount(inst.ravel(), minlength=len(cx) + 1)[1:]
    return inst, _finish(frame, p)


def _props(region: np.ndarray, p: int) -> dict:
    ys, xs = np.nonzero(region)
    cov = np.cov(np.stack([xs, ys])) if len(xs) > 2 else np.eye(2)
    ev, vec = np.linalg.eigh(np.atleast_2d(cov))
    major = vec[:, -1]
    return {
        "cx": xs.mean() + 0.5,
        "cy": ys.mean() + 0.5,
        "area_px": float(len(xs)),
        "visible_px": int(len(xs)),
        "elongation": float(np.sqrt(max(ev[-1], 1e-6) / max(ev[0], 1e-6))),
        "orientation_rad": float(np.arctan2(major[1], major[0])),
        "border": bool(xs.min() == 0 or ys.min() == 0 or xs.max() == p - 1 or ys.max() == p - 1),
    }


def _finish(frame: pd.DataFrame, p: int) -> pd.DataFrame:
    """Add ``counted`` and ``local_density`` (other nuclei centred within P/4 px, per
    1000 px² of that disc)."""
    frame["counted"] = True
    if len(frame):
        d = np.hypot(
            frame["cx"].to_numpy()[:, None] - frame["cx"].to_numpy()[None],
            frame["cy"].to_numpy()[:, None] - frame["cy"].to_numpy()[None],
        )
        r = p / 4
        frame["local_density"] = ((d < r).sum(axis=1) - 1) / (np.pi * r * r / 1000)
    else:
        frame["local_density"] = []
    return frame


def _order(nuc: pd.DataFrame) -> float:
    """Area-weighted nematic order of the nuclei (``FORMULAS['order']``) from the table."""
    if not len(nuc):
        return 0.0
    # area_px = pi a b, elongation = a / b
    w = nuc["area_px"].to_numpy(np.float64)
    q = w * (1 - 1 / nuc["elongation"].to_numpy(np.float64)) * np.exp(2j * nuc["orientation_rad"].to_numpy())
    return float(abs(q.sum()) / w.sum())
