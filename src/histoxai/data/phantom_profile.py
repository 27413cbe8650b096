"""Per-sample character of the phantom: parameter ranges, stains, blur and noise.

Each sample draws its own [lo, hi] range per tissue-parameter map and its own stain
vectors and uptake, white level, optical blur and sensor noise, so samples differ the way
tumours scanned on different days do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from histoxai.data import phantom_draw as draw

PARAMS = ("density_per_kum2", "radius_um", "elongation", "coherence", "air_fraction")
"""Tissue-parameter maps; each sample draws its own [lo, hi] range per map."""


@dataclass(frozen=True)
class SampleProfile:
    """What makes one phantom sample different from the others."""

    name: str
    ranges: dict[str, tuple[float, float]]
    stains_od: np.ndarray  # (3, 3): haematoxylin, eosin, RBC OD vectors
    stain_scale: tuple[float, float]  # haematoxylin, eosin uptake
    background: np.ndarray  # (3,) white level in [0, 1]
    blur_px: float
    noise_gray: float

    def colours(self) -> dict[str, list[int]]:
        """Nominal RGB of nuclei, stroma and air (before texture, blur and noise)."""
        h, e = self.stain_scale
        conc = {"nuclei": (1.4 * h, 0.15 * e, 0), "stroma": (0.05 * h, 0.45 * e, 0), "air": (0.01, 0.03, 0)}
        return {k: [int(round(v)) for v in _rgb(self, c)] for k, c in conc.items()}

    def card(self) -> dict:
        return {
            "ranges": {k: [round(lo, 4), round(hi, 4)] for k, (lo, hi) in self.ranges.items()},
            "stains_od": np.round(self.stains_od, 4).tolist(),
            "stain_scale": [round(v, 4) for v in self.stain_scale],
            "colours_rgb": self.colours(),
            "blur_px": round(self.blur_px, 4),
            "noise_gray": round(self.noise_gray, 4),
        }


def _rgb(profile: SampleProfile, conc: tuple[float, float, float]) -> np.ndarray:
    return 255 * profile.background * np.exp(-np.asarray(conc) @ profile.stains_od)


def draw_profile(rng: np.random.Generator, name: str) -> SampleProfile:
    """Random per-sample parameter ranges, stain vectors, blur and noise."""
    lo = {
        "density_per_kum2": rng.uniform(1.5, 5.0),
        "radius_um": rng.uniform(2.4, 3.4),
        "elongation": rng.uniform(1.0, 1.5),
        "coherence": rng.uniform(0.0, 0.4),
        "air_fraction": rng.uniform(0.0, 0.1),
    }
    width = {
        "density_per_kum2": rng.uniform(3.0, 8.0),
        "radius_um": rng.uniform(0.6, 1.8),
        "elongation": rng.uniform(0.5, 1.5),
        "coherence": rng.uniform(0.3, 0.6),
        "air_fraction": rng.uniform(0.1, 0.4),
    }
    ranges = {
        k: (float(lo[k]), float(min(lo[k] + width[k], 1.0 if k == "coherence" else np.inf))) for k in PARAMS
    }
    stains = np.stack([draw.HAEMATOXYLIN_OD, draw.EOSIN_OD, draw.RBC_OD])
    stains[:2] = np.abs(stains[:2] + rng.normal(0, 0.07, (2, 3)))
    stains /= np.linalg.norm(stains, axis=1, keepdims=True)
    return SampleProfile(
        name=name,
        ranges=ranges,
        stains_od=stains,
        stain_scale=(float(rng.uniform(0.8, 1.25)), float(rng.uniform(0.7, 1.3))),
        background=rng.uniform(0.92, 0.99, 3),
        blur_px=float(rng.uniform(0.3, 1.2)),
        noise_gray=float(rng.uniform(1.5, 6.0)),
    )
