"""The results file: JSON lines, a header with the grid spec, then one line per finished cell.

Each line is written with flush + fsync; a half-written last line (a killed run) is dropped, so a
rerun resumes where the last one stopped.  A file whose header holds another spec is refused.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .grid import cell_key

__all__ = ["read_results", "open_results", "append"]


def read_results(path) -> tuple[dict | None, list[dict]]:
    """``(spec, cell records)`` of a results file; a half-written last line is ignored."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no results file at {path}")
    spec, rows = None, []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # an interrupted write
        if rec.get("kind") == "header":
            spec = rec["spec"]
        elif rec.get("kind") == "cell":
            rows.append(rec)
    return spec, rows


def open_results(path: Path, spec: dict) -> dict:
    """Create the file with its header, or check its header against ``spec``; returns the finished cells."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size > 0:
        data = path.read_bytes()
        if not data.endswith(b"\n"):  # killed mid-write: drop the partial line before appending
            with open(path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
        old, rows = read_results(path)
        if old is None:
            raise ValueError(f"{path} is not a telescope bench results file (no header line)")
        if old != spec:
            diff = [f"{k}: file has {old.get(k)!r}, this run {spec.get(k)!r}"
                    for k in sorted(set(old) | set(spec)) if old.get(k) != spec.get(k)]
            raise ValueError(f"{path} holds results of a different grid ({'; '.join(diff)}); use another --out "
                             f"file or the same grid")
        return {cell_key(r["cell"]): r for r in rows}
    append(path, {"kind": "header", "spec": spec, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return {}


def append(path: Path, rec: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")
        f.flush()
        os.fsync(f.fileno())
