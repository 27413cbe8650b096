"""Hand-made ground truth for the XAI-evaluation tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from histoxai.xai_eval.truth import NUCLEUS_COLUMNS, Truth


def blob_truth(n: int = 8, size: int = 16, target: str = "cc", seed: int = 0) -> Truth:
    """Patches with three square 'nuclei' (2 counted, 1 uncounted) and a distractor."""
    rng = np.random.default_rng(seed)
    inst = np.zeros((n, size, size), dtype=np.int32)
    unc = np.zeros((n, size, size), dtype=bool)
    dis = np.zeros((n, size, size), dtype=bool)
    rows = []
    for i in range(n):
        a, b = rng.integers(0, size // 2 - 3, 2), rng.integers(size // 2, size - 3, 2)
        inst[i, a[0] : a[0] + 3, a[1] : a[1] + 3] = 1
        inst[i, b[0] : b[0] + 2, b[1] : b[1] + 4] = 2
        unc[i, 0:2, size - 2 :] = True
        dis[i, size - 2 :, 0:2] = True
        for k, (area, el) in enumerate(((9, 1.0), (8, 2.0)), start=1):
            rows.append({"patch_id": i, "nucleus": k, "counted": True, "area_px": area, "visible_px": area,
                         "elongation": el, "orientation_rad": 0.1 * k, "local_density": float(k),
                         "border": k == 2})  # fmt: skip
    signed = np.zeros((n, size, size), dtype=np.float32)
    for k in (1, 2):
        signed[inst == k] = 1.0 / (inst[0] == k).sum()
    return Truth(target, signed, inst, unc, dis, pd.DataFrame(rows, columns=list(NUCLEUS_COLUMNS)), "test",
                 np.arange(n))  # fmt: skip
