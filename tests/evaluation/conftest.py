"""Fixtures for the evaluation tests."""

from __future__ import annotations

import pytest

from histoxai.data.store import PatchStore
from tests.evaluation.helpers import make_phantom_store


@pytest.fixture(scope="session")
def phantom_store(tmp_path_factory) -> PatchStore:
    """Three phantom samples of 5x6 voxels at 32 px; s3 is held out (``out``)."""
    return make_phantom_store(tmp_path_factory.mktemp("phantom") / "patches")
