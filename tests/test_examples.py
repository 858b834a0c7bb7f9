"""Every script in examples/ runs at tiny sizes (``--tiny``) in its own subprocess.

The examples selected for a run are started two at a time (each single-threaded: 2 CPU cores), then each
test checks its own script's exit status.  The slower ones (worker processes, sbi, many CLI calls) are
marked ``slow``: ``python -m pytest -m slow tests/test_examples.py``.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SLOW = {"campaign-store_dask.py", "two_moons-interop.py", "cli-pipeline.sh"}
SCRIPTS = sorted(p.name for p in EXAMPLES.iterdir() if p.suffix in (".py", ".sh"))
TIMEOUT = 600


def _command(name: str, out: pathlib.Path) -> list[str]:
    path = str(EXAMPLES / name)
    if name.endswith(".sh"):
        return ["bash", path, "--tiny", str(out)]
    cmd = [sys.executable, path, "--tiny"]
    return cmd + ["--out", str(out)] if "--out" in (EXAMPLES / name).read_text() else cmd


def _run(name: str, out: pathlib.Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg",
               TELESCOPE_EXAMPLE_SCALE="tiny")
    # the `telescope` command of this interpreter first on PATH (the CLI example calls it)
    env["PATH"] = os.pathsep.join([str(pathlib.Path(sys.executable).parent), env.get("PATH", "")])
    return subprocess.run(_command(name, out), cwd=out, env=env, capture_output=True, text=True, timeout=TIMEOUT)


@pytest.fixture(scope="session")
def example_runs(request, tmp_path_factory):
    """Run every example selected in this session, two at a time; ``{name: CompletedProcess}``."""
    names = [item.callspec.params["name"] for item in request.session.items
             if getattr(item, "originalname", None) == "test_example" and hasattr(item, "callspec")]
    outs = {name: tmp_path_factory.mktemp(name.replace(".", "_")) for name in names}
    with ThreadPoolExecutor(2) as pool:
        futures = {name: pool.submit(_run, name, outs[name]) for name in names}
        return {name: (f.result(), outs[name]) for name, f in futures.items()}


def test_every_capability_has_an_example():
    assert len(SCRIPTS) >= 10, SCRIPTS
    for name in SCRIPTS:
        text = (EXAMPLES / name).read_text()
        assert "--tiny" in text and "TELESCOPE_EXAMPLE_SCALE" in text, f"{name} has no size knob"


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in SCRIPTS])
def test_example(name, example_runs):
    if name.endswith(".sh") and shutil.which("bash") is None:
        pytest.skip("no bash")
    proc, out = example_runs[name]
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    if name == "two_moons-diagnostics.py":
        assert {p.name for p in out.glob("*.png")} >= {"corner.png", "coverage.png", "sbc_ecdf.png", "tarp.png"}
