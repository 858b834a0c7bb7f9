"""The documentation site builds with warnings as errors (mkdocs.yml, docs/, the API pages from the docstrings).

The docs tools come with the test extra (``telescope-sbi[docs]``); without them the test skips.
"""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("mkdocs", "mkdocstrings_handlers.python")),
                    reason="mkdocs / mkdocstrings-python not installed (pip install -e '.[docs]')")
def test_docs_build_strict(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert (tmp_path / "site" / "api" / "estimators" / "index.html").exists()


def test_docs_cover_every_stage():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in ("getting-started.md", "guide/simulation.md", "guide/estimators.md", "guide/sampling.md",
                 "guide/multilevel.md", "guide/mlmc.md", "guide/diagnostics.md", "guide/cli.md", "guide/interop.md"):
        assert page in nav and (ROOT / "docs" / page).exists(), page
    for module in ("simulation", "training", "estimators", "samplers", "multilevel", "mlmc", "metrics", "tasks"):
        assert f"::: telescope.{module}" in (ROOT / "docs" / "api" / f"{module}.md").read_text(), module
