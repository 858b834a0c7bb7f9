"""The public API type-checks: mypy on the modules listed under [tool.mypy] in pyproject.toml (lenient config).

mypy comes with the test extra; without it the test skips.  About 40 s on a cold cache, a few seconds after.
"""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy not installed (pip install -e '.[test]')")
def test_public_api_type_checks(tmp_path_factory):
    cache = tmp_path_factory.getbasetemp().parent / "mypy-cache"  # kept between runs of the same user
    proc = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(cache)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
