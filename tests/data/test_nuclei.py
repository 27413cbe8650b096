import numpy as np
import pytest

from histoxai.data.nuclei import count_nuclei, detect_nuclei, hematoxylin

PINK, PURPLE = (235, 170, 200), (90, 50, 140)


def he_with_nuclei(centres, shape=(96, 96), radius=4, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.empty((*shape, 3))
    image[:] = PINK
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for y, x in centres:
        image[(yy - y) ** 2 + (xx - x) ** 2 <= radius**2] = PURPLE
    return np.clip(image + rng.normal(0, 5, image.shape), 0, 255).astype(np.uint8)


def test_separate_and_touching_nuclei_are_found_at_their_centres():
    centres = [(20, 20), (20, 70), (60, 40), (60, 47), (80, 80)]  # (60, 40) and (60, 47) touch
    found = detect_nuclei(he_with_nuclei(centres), um_per_px=1.0)
    assert len(found) == len(centres)
    nearest = np.abs(found[:, None] - np.array(centres)[None]).sum(-1).min(axis=0)
    assert nearest.max() <= 1.5


def test_stroma_alone_has_no_nuclei():
    assert count_nuclei(he_with_nuclei([]), um_per_px=1.0) == 0
    assert len(detect_nuclei(np.full((32, 32, 3), 255, np.uint8))) == 0


def test_small_specks_are_not_nuclei():
    assert count_nuclei(he_with_nuclei([(30, 30)], radius=1), um_per_px=1.0) == 0
    assert count_nuclei(he_with_nuclei([(30, 30)], radius=1), um_per_px=2.0) == 1  # 5 px of 4 µm² each


def test_core_counts_a_nucleus_by_its_centroid_once():
    image = he_with_nuclei([(40, 47)])  # disk crosses the column-48 border
    left, right = (slice(0, 96), slice(0, 48)), (slice(0, 96), slice(48, 96))
    assert count_nuclei(image, 1.0, core=left) == 1 and count_nuclei(image, 1.0, core=right) == 0


def test_hematoxylin_needs_rgb():
    assert (
        hematoxylin(np.full((4, 4, 3), PURPLE, np.uint8)).mean()
        > hematoxylin(np.full((4, 4, 3), PINK, np.uint8)).mean()
    )
    with pytest.raises(ValueError, match="RGB"):
        hematoxylin(np.zeros((4, 4), np.uint8))
