"""Shared test configuration: single-threaded torch, seeded generators, hypothesis profile.

Tests run under pytest-xdist with 2 workers on a 2-core machine; multithreaded BLAS on tiny
matrices is two orders of magnitude slower there, so torch is pinned to one thread.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

torch.set_num_threads(1)

# Fixed seeds everywhere: hypothesis draws its examples deterministically too.
settings.register_profile(
    "ebmcmc",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=30,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    print_blob=True,
)
settings.load_profile("ebmcmc")


@pytest.fixture
def gen() -> torch.Generator:
    """A CPU generator seeded with 0."""
    return torch.Generator().manual_seed(0)


@pytest.fixture
def make_gen():
    """Factory: ``make_gen(seed)`` gives a fresh CPU generator with that seed."""

    def make(seed: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    return make


@pytest.fixture
def rng() -> np.random.Generator:
    """A NumPy generator seeded with 0."""
    return np.random.default_rng(0)


def pytest_collection_modifyitems(config, items):
    """Skip ``gpu``-marked tests when CUDA is unavailable (CI has no GPU)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# tests/data holds fixtures and the scripts that made them (they need an old commit to run):
# never import them while collecting tests or doctests
collect_ignore_glob = ["data/*"]
