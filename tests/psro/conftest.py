"""Fixtures shared by the psro tests."""

import jax
import pytest


@pytest.fixture
def x64():
    """Run the test in float64 (certificates below float32's resolution)."""
    with jax.enable_x64(True):
        yield
