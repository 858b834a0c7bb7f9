"""Project hygiene: one version, a licence, CI runs the README's test command."""

from __future__ import annotations

import importlib.metadata
import pathlib
import re

import telescope

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_one_version():
    assert telescope.__version__ == importlib.metadata.version("telescope-sbi")
    assert 'dynamic = ["version"]' in (ROOT / "pyproject.toml").read_text()


def test_license_and_typed_marker():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert (ROOT / "src" / "telescope" / "py.typed").exists()


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^(pip install .*pytest.*)$", readme, flags=re.M)
    assert len(commands) == 1, commands
    assert commands[0] in (ROOT / ".ci" / "run").read_text().splitlines()


def test_doctests_run_by_default():
    """Every `>>>` example under src/ runs: pytest collects the package with --doctest-modules, none is skipped."""
    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "src/telescope" in ini["testpaths"] and "--doctest-modules" in ini["addopts"]
    skipped = [str(p.relative_to(ROOT)) for p in (ROOT / "src").rglob("*.py") if "doctest: +SKIP" in p.read_text()]
    assert not skipped, f"doctest examples skipped in {skipped}"
