"""Test-wide settings: one torch thread (small networks run much faster single-threaded on 2 cores)."""
import os

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _reference_cache(tmp_path_factory):
    # keep reference posteriors computed by the tests out of the user's cache
    os.environ.setdefault("TELESCOPE_CACHE", str(tmp_path_factory.mktemp("telescope-cache")))
    yield
