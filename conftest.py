"""Repository-wide pytest settings, for the doctests under ``src/`` as well as ``tests/``.

``pytest`` collects ``src/telescope`` with ``--doctest-modules`` (see ``pyproject.toml``): every ``>>>``
example in the package runs.  Deprecated one-line shims at old import paths (``telescope/store.py`` ->
``telescope.simulation.store``, see ``telescope._compat``) are skipped: importing them replaces the module
by its new path, which pytest would report as a file mismatch, and they hold no examples.
"""

from __future__ import annotations

import os
import pathlib

import pytest

_SRC = pathlib.Path(__file__).resolve().parent / "src" / "telescope"


def _is_shim(path: pathlib.Path) -> bool:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return False
    return "_compat import alias" in text and "alias(__name__" in text


def pytest_ignore_collect(collection_path: pathlib.Path, config):
    path = pathlib.Path(collection_path)
    if path.suffix == ".py" and _SRC in path.parents and _is_shim(path):
        return True
    return None


@pytest.fixture(autouse=True, scope="session")
def _doctest_settings(tmp_path_factory):
    # one torch thread (small networks run faster single-threaded on 2 cores), no progress bars in doctest
    # output, and reference posteriors computed by examples kept out of the user's cache
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("TELESCOPE_CACHE", str(tmp_path_factory.mktemp("telescope-cache")))
    yield
