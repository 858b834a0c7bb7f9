"""Reading a store: :func:`load_simulations` (ready for ``fit``), :func:`export_arrays` (memory-mapped),
:func:`checkpoint` (fold the write-ahead log into the file) and :func:`store_info` (a summary)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import torch

from .database import Store
from .schema import _array, _guard, db_file

__all__ = ["checkpoint", "export_arrays", "load_simulations", "store_info"]


def load_simulations(path, level: int | None = None, include_failed: bool = False):
    """Load simulations from a store, ready for ``fit``.

    Arguments:
        path: the store given to :func:`telescope.simulate` / :func:`telescope.simulate_levels`.
        level: for a ladder store, return only level ``level``; ``None`` returns every level.
        include_failed: keep failed simulations (their ``x`` rows hold NaN); by default they are dropped.

    Returns:
        For a :func:`telescope.simulate` store, ``theta (n, d)`` and ``x (n, *event)``.  For a
        :func:`telescope.simulate_levels` store, a list whose entry ``l`` is ``(theta, x_0)`` for
        ``l = 0`` and ``(theta, x_l, x_{l-1})`` for ``l >= 1`` (or that one entry when ``level`` is given).
        Rows are ordered by batch index, then row.

    Example:
        >>> import telescope as ts, torch, tempfile
        >>> prior = ts.BoxUniform([0.0], [1.0])
        >>> path = tempfile.mkdtemp() + "/run"
        >>> _ = ts.simulate(lambda th: th + torch.randn_like(th), prior, 10, store=path, progress_bar=False)
        >>> theta, x = load_simulations(path)
        >>> theta.shape, x.shape
        (torch.Size([10, 1]), torch.Size([10, 1]))
    """
    with Store(path) as store, _guard(store.file):
        meta = store.meta
        if not meta:
            raise _empty(store)
        plan = meta.get("levels", [])
        n_levels = len(plan)
        if store.kind == "simulate" and level not in (None, 0):
            raise ValueError(f"level must be None or 0 for a store written by simulate(), got {level!r}")
        if level is not None and (isinstance(level, bool) or not isinstance(level, int) or not 0 <= level < n_levels):
            raise ValueError(f"level must be an integer in 0..{n_levels - 1} for this ladder store, got {level!r}")
        stats = store.level_stats()
        have = {p["level"]: stats.get(p["level"], {}).get("n") or 0 for p in plan}
        missing = [(p["level"], have[p["level"]], p["n"]) for p in plan
                   if have[p["level"]] < p["n"] and (level is None or p["level"] == level)]
        if missing:
            text = ", ".join(f"level {lv}: {h} of {want}" for lv, h, want in missing)
            warnings.warn(f"store {str(path)!r} is incomplete ({text} simulations); run the same campaign call "
                          f"again to resume it", RuntimeWarning, stacklevel=2)
        if store.kind == "simulate":
            d = _usable(store, 0, include_failed)
            return d["theta"], d["x"]
        out = []
        for lv in range(n_levels) if level is None else [level]:
            d = _usable(store, lv, include_failed)
            out.append((d["theta"], d["x"]) if lv == 0 else (d["theta"], d["x"], d["x_low"]))
        return out if level is None else out[0]


def _usable(store: Store, level: int, include_failed: bool) -> dict:
    d = store.read(level, include_failed=include_failed)
    n_stored = d["theta"].shape[0] + (0 if include_failed else d["n_failed"])
    where = f"level {level} of store" if store.kind == "levels" else "store"
    if n_stored == 0:
        raise ValueError(f"{where} {str(store.path)!r} holds no finished batch yet (the campaign stopped, or was "
                         f"interrupted, before its first batch was written); run the campaign call again")
    if not include_failed and d["theta"].shape[0] == 0:
        first = "; ".join(e for *_, e in store.failures(level, limit=3))
        raise ValueError(f"all {n_stored} simulations of {where} {str(store.path)!r} failed, so there is nothing to "
                         f"train on (first errors: {first}). load_simulations(..., include_failed=True) returns them "
                         f"with NaN x; `telescope store info` lists the failures")
    return d


def _empty(store: Store) -> ValueError:
    return ValueError(
        f"store {str(store.path)!r} is empty (no campaign was started in it). If this file was copied from a store "
        f"whose campaign was running or was killed, its latest data may still be in the write-ahead log next to "
        f"the original ({store.file.name}-wal): copy that file too, or run `telescope store checkpoint PATH` on "
        f"the original first")


def export_arrays(path, level: int = 0) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The usable simulations of a ``simulate()`` store as memory-mapped tensors: ``theta (n, d)``, ``x (n, *event)``.

    The rows are written once, batch by batch, to ``theta.npy`` and ``x.npy`` in ``<store file>.arrays/``
    (float32; failed simulations left out) and mapped read-only-in-effect (copy-on-write) from there, so
    reading costs one batch of memory and training touches the data through the page cache, which the
    operating system can reclaim.  The export is reused while the store is unchanged.  Returns
    ``(theta, x, n_failed)``.  Needs free disk space about the size of the usable data.
    """
    with Store(path) as store, _guard(store.file):
        if not store.meta:
            raise _empty(store)
        where = "WHERE level = ?"
        n_all, n_failed, n_batches, last = store.con.execute(
            f"SELECT COALESCE(SUM(n), 0), COALESCE(SUM(n_failed), 0), COUNT(*), MAX(finished) FROM batches {where}",
            (level,)).fetchone()
        if n_all == 0:
            raise ValueError(f"store {str(store.path)!r} holds no finished batch of level {level} yet")
        if n_all == n_failed:
            raise ValueError(f"all {n_all} simulations of store {str(store.path)!r} failed: nothing to train on")
        out_dir = store.file.with_name(store.file.name + ".arrays")
        stamp = {"level": level, "n": n_all, "n_failed": n_failed, "batches": n_batches, "last": last}
        info = out_dir / f"level{level}.json"
        f_theta, f_x = out_dir / f"theta{level}.npy", out_dir / f"x{level}.npy"
        if not (info.exists() and f_theta.exists() and f_x.exists() and json.loads(info.read_text()) == stamp):
            out_dir.mkdir(exist_ok=True)
            info.unlink(missing_ok=True)
            arrays: dict = {}
            pos = 0
            q = f"SELECT idx, theta, theta_shape, x, x_shape, ok FROM batches {where} ORDER BY idx"
            for idx, t, ts, x, xs, ok in store.con.execute(q, (level,)):
                try:
                    theta = _array(t, "<f4", json.loads(ts))
                    xa = _array(x, "<f4", json.loads(xs))
                    keep = np.frombuffer(ok, "u1").astype(bool)
                    if not arrays:
                        n_ok = n_all - n_failed
                        arrays = {"theta": np.lib.format.open_memmap(f_theta, "w+", np.float32,
                                                                     (n_ok, *theta.shape[1:])),
                                  "x": np.lib.format.open_memmap(f_x, "w+", np.float32, (n_ok, *xa.shape[1:]))}
                    m = int(keep.sum())
                    arrays["theta"][pos : pos + m] = theta[keep]
                    arrays["x"][pos : pos + m] = xa[keep]
                except (TypeError, ValueError) as e:
                    raise ValueError(f"store {str(store.file)!r}: batch {idx} of level {level} is unreadable "
                                     f"({type(e).__name__}: {e}); was the row edited by hand?") from None
                pos += m
            if pos != n_all - n_failed:
                raise ValueError(f"store {str(store.file)!r}: the ok flags of level {level} count {pos} usable "
                                 f"simulations, the n_failed columns {n_all - n_failed}; was a row edited by hand?")
            for a in arrays.values():
                a.flush()
            del arrays
            info.write_text(json.dumps(stamp))
    theta = torch.from_numpy(np.load(f_theta, mmap_mode="c"))
    x = torch.from_numpy(np.load(f_x, mmap_mode="c"))
    return theta, x, int(n_failed)


def checkpoint(path) -> dict:
    """Move every committed batch of a store from its write-ahead log into the ``.sqlite`` file.

    Afterwards the ``.sqlite`` file alone holds the whole store (safe to copy).  Takes the writer lock, so
    it refuses while a campaign writes the store.  Returns ``{"file", "wal_frames", "checkpointed"}``.

    Example:
        >>> import tempfile, telescope as ts
        >>> path = tempfile.mkdtemp() + "/x"
        >>> _ = ts.simulate(lambda theta: theta + 1, ts.BoxUniform([0.0], [1.0]), 100, seed=0, store=path,
        ...                 progress_bar=False)
        >>> checkpoint(path)
        {'file': '.../x/simulations.sqlite', 'wal_frames': ..., 'checkpointed': ...}
    """
    file = db_file(path)
    if not file.exists():
        raise FileNotFoundError(f"no simulation store at {str(path)!r} (looked for {str(file)!r})")
    with Store(path, write=True) as store, _guard(store.file):
        if not store.meta:
            raise _empty(store)
        busy, frames, done = store.con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise RuntimeError(f"store {str(path)!r} is being read by another process; the checkpoint could not "
                               f"finish, try again")
        return {"file": str(store.file), "wal_frames": int(frames), "checkpointed": int(done)}


def store_info(path) -> dict:
    """A summary of a store: kind, simulators, prior, seed, levels (stored/target, failures, costs), size.

    Example:
        >>> import tempfile, telescope as ts
        >>> path = tempfile.mkdtemp() + "/x"
        >>> _ = ts.simulate(lambda theta: theta + 1, ts.BoxUniform([0.0], [1.0]), 100, seed=0, store=path,
        ...                 progress_bar=False)
        >>> info = store_info(path)
        >>> info["kind"], info["levels"][0]["n_stored"], info["levels"][0]["n_failed"]
        ('simulate', 100, 0)
    """
    with Store(path) as store, _guard(store.file):
        meta = store.meta
        if not meta:
            raise _empty(store)
        stats = store.level_stats()
        levels = []
        for p, sim in zip(meta.get("levels", []), meta.get("simulators", [])):
            st = stats.get(p["level"], {})
            n_stored = st.get("n") or 0
            sec = st.get("seconds") or 0.0
            nb_target = -(-p["n"] // p["batch_size"])
            levels.append({
                "level": p["level"], "simulator": sim["name"], "fingerprint": sim["fingerprint"],
                "n_target": p["n"], "n_stored": n_stored, "n_failed": st.get("failed") or 0,
                "batches_stored": st.get("batches") or 0, "batches_target": nb_target,
                "batch_size": p["batch_size"], "seed": p["seed"], "seconds": sec,
                "seconds_per_simulation": sec / n_stored if n_stored else None,
            })
        size = sum(f.stat().st_size for f in store.file.parent.glob(store.file.name + "*") if f.is_file())
        return {
            "path": str(store.path), "file": str(store.file),
            "format": f"SQLite 3 (telescope schema {meta.get('schema')})",
            "size_bytes": size, "kind": meta.get("kind"), "seed": meta.get("seed"), "prior": meta.get("prior"),
            "simulators": meta.get("simulators"), "x_event_shape": meta.get("x_event_shape"),
            "telescope_version": meta.get("telescope_version"), "created": meta.get("created"),
            "levels": levels, "failures": [{"level": lv, "batch": b, "row": r, "error": e}
                                           for lv, b, r, e in store.failures(limit=5)],
        }
