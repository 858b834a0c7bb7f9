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
