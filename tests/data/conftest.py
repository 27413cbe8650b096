"""Fixtures for ``tests/data``: a MICROMEN-format folder built from the real ``summary.mat``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.fixtures.micromen_fixture import FixtureSample, build_micromen, load_summary, summary_or_skip

UM_PER_PX = 1.0
"""Pixel size of the fixture's HE: 16 px per voxel, nuclei 7 px (7 µm) across."""


@pytest.fixture(scope="session")
def micromen_summary() -> dict:
    """The real per-voxel maps of the 16 MICROMEN samples (skipped locally if absent, required in CI)."""
    return load_summary(summary_or_skip())


@pytest.fixture(scope="session")
def micromen_data(micromen_summary, tmp_path_factory) -> tuple[Path, dict[int, FixtureSample]]:
    """Samples 1 (v7.3 + QuPath export), 2 (v7.3) and 3 (v5); read-only, copy before changing."""
    root = tmp_path_factory.mktemp("micromen")
    return root, build_micromen(root, micromen_summary, um_per_px=UM_PER_PX)


@pytest.fixture
def micromen_copy(micromen_data, tmp_path) -> tuple[Path, dict[int, FixtureSample]]:
    """A private copy of the MICROMEN fixture folder that a test may damage."""
    root, samples = micromen_data
    copy = tmp_path / "micromen"
    shutil.copytree(root, copy)
    return copy, samples
