"""Per-sample character of the phantom: tissue-parameter ranges, stains, blur and noise.

Tissue and appearance are drawn independently. Every sample's tissue-parameter range is a
sub-interval covering ``tissue_overlap`` of the geometry's shared range (``GEOMETRIES``),
so samples overlap in what the tissue is like; stain vectors and uptake, white level,
optical blur and sensor noise are drawn per sample, so samples differ in how they look.
Leaving a sample out then tests reading tissue, not recognising a look.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from histoxai.data import phantom_draw as draw

PARAMS = ("density_per_kum2", "radius_um", "elongation", "coherence", "fibres", "air_fraction")
"""Tissue-parameter maps; each sample draws its own [lo, hi] range per map."""

GEOMETRIES: dict[str, dict] = {
    # 64 um voxels: the CPU demo (128 px at 0.5 um/px).
    "demo": {
        "voxel_um": 64.0,
        "ranges": {
            "density_per_kum2": (1.5, 11.0),
            "radius_um": (2.4, 4.4),
            "elongation": (1.0, 2.8),
            "coherence": (0.0, 1.0),
            "fibres": (0.0, 1.0),
            "air_fraction": (0.0, 0.3),
        },
    },
    # MICROMEN: 200 um MR voxels; meningioma nuclei 6-10 um across, spindle cells in
    # fibrous meningioma up to 3:1; 2-9 nuclei per 1000 um^2 of section.
    "micromen": {
        "voxel_um": 200.0,
        "ranges": {
            "density_per_kum2": (2.0, 9.0),
            "radius_um": (3.0, 5.0),
            "elongation": (1.0, 3.0),
            "coherence": (0.0, 1.0),
            "fibres": (0.0, 1.0),
            "air_fraction": (0.0, 0.3),
        },
    },
}
"""Voxel size and the shared tissue-parameter ranges of each phantom geometry."""


MIN_STAIN_ANGLE_DEG = 18.0
"""Smallest angle between a sample's haematoxylin and eosin OD vectors (reference: 22 deg)."""


@dataclass(frozen=True)
class SampleProfile:
    """What makes one phantom sample different from the others."""

    name: str
    ranges: dict[str, tuple[float, float]]
    stains_od: np.ndarray  # (3, 3): haematoxylin, eosin, RBC OD vectors
    stain_scale: tuple[float, float]  # haematoxylin, eosin uptake
    background: np.ndarray  # (3,) white level in [0, 1]
    blur_px: float  # at 0.5 um/px; scaled to the rendering resolution
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
            "blur_px_at_0.5um": round(self.blur_px, 4),
            "noise_gray": round(self.noise_gray, 4),
        }


def _rgb(profile: SampleProfile, conc: tuple[float, float, float]) -> np.ndarray:
    return 255 * profile.background * np.exp(-np.asarray(conc) @ profile.stains_od)


def draw_profile(rng: np.random.Generator, name: str, geometry: str, tissue_overlap: float) -> SampleProfile:
    """Per-sample tissue ranges (``tissue_overlap`` of the shared span each) and appearance.

    Tissue and appearance come from two independent streams of ``rng`` so changing the
    overlap leaves every sample's look unchanged.
    """
    tissue_rng, look_rng = (np.random.default_rng(s) for s in rng.integers(2**63, size=2))
    ranges = {}
    for k in PARAMS:
        lo, hi = GEOMETRIES[geometry]["ranges"][k]
        width = tissue_overlap * (hi - lo)
        start = lo + tissue_rng.random() * (hi - lo - width)
        ranges[k] = (float(start), float(start + width))
    while True:  # stain vectors jittered, but haematoxylin and eosin stay distinguishable
        stains = np.stack([draw.HAEMATOXYLIN_OD, draw.EOSIN_OD, draw.RBC_OD])
        stains[:2] = np.abs(stains[:2] + look_rng.normal(0, 0.07, (2, 3)))
        stains /= np.linalg.norm(stains, axis=1, keepdims=True)
        if np.degrees(np.arccos(min(1.0, float(stains[0] @ stains[1])))) >= MIN_STAIN_ANGLE_DEG:
            break
    return SampleProfile(
        name=name,
        ranges=ranges,
        stains_od=stains,
        stain_scale=(float(look_rng.uniform(0.8, 1.25)), float(look_rng.uniform(0.7, 1.3))),
        background=look_rng.uniform(0.92, 0.99, 3),
        blur_px=float(look_rng.uniform(0.0, 1.6)),
        noise_gray=float(look_rng.uniform(1.5, 6.0)),
    )
