"""Ground-truth mask outlines drawn over tiles (phantom stores): the tissue classes of
``PatchStore.masks`` and, when the store has nucleus instances, the counted nuclei
(``PatchStore.instances`` with the ``counted`` flag of ``table("nuclei")``).

An outline image is transparent except on the class boundary, at the served size.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from histoxai.data.store import MASK_CLASSES

COUNTED = "counted"
COLOURS: dict[str, tuple[int, int, int]] = {
    "nuclei": (0, 229, 255),
    "stroma": (57, 255, 20),
    "air": (255, 214, 0),
    "distractor": (255, 45, 85),
    COUNTED: (255, 0, 255),
}


def mask_choices(patches) -> tuple[str, ...]:
    """Outline classes a patch store can show (empty without masks)."""
    if patches is None or not getattr(patches, "has_masks", False):
        return ()
    extra = (COUNTED,) if getattr(patches, "has_instances", False) else ()
    return (*MASK_CLASSES, *extra)


@cache
def _counted(patches) -> dict[int, np.ndarray]:
    """patch id -> instance ids of its counted nuclei."""
    nuclei = patches.table("nuclei")
    rows = nuclei[nuclei["counted"].astype(bool)]
    return {int(p): g["nucleus"].to_numpy(np.int64) for p, g in rows.groupby("patch_id")}


def region(patches, pid: int, cls: str) -> np.ndarray:
    """(P, P) bool: the pixels of class ``cls`` in patch ``pid``."""
    if cls == COUNTED:
        inst = patches.instances([pid])[0]
        return np.isin(inst, _counted(patches).get(int(pid), np.zeros(0, np.int64)))
    return patches.masks([pid])[0] == MASK_CLASSES.index(cls)


def outline(m: np.ndarray) -> np.ndarray:
    """Boundary pixels of a boolean region (pixels with a 4-neighbour outside it)."""
    inner = m.copy()
    inner[1:] &= m[:-1]
    inner[:-1] &= m[1:]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    return m & ~inner


def outline_rgba(patches, pid: int, cls: str, size: int) -> np.ndarray:
    """(size, size, 4) uint8: the class outline in its colour, transparent elsewhere."""
    m = region(patches, pid, cls)
    f = max(1, m.shape[0] // size)
    if f > 1:  # nearest-neighbour down to the served size, then the outline (stays 1 px wide)
        m = m[: size * f : f, : size * f : f]
    edge = outline(m)
    out = np.zeros((*edge.shape, 4), dtype=np.uint8)
    out[edge] = (*COLOURS[cls], 255)
    return out
