"""The tiny phantom store fixture of the training tests."""

from tests.training.conftest import phantom  # noqa: F401
