"""An open simulation store: :class:`Store` creates, locks, writes and reads the SQLite file of a store.

Every finished batch is appended in one SQLite transaction (``BEGIN IMMEDIATE ... COMMIT``), so the file holds
whole batches only; a campaign holds an OS file lock while it writes, released if its process dies.
"""

from __future__ import annotations

import datetime
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .schema import (
    _README,
    _SCHEMA,
    DB_NAME,
    _array,
    _blob,
    _check_sqlite_file,
    _guard,
    _transaction,
    _version,
    db_file,
)

__all__ = ["Store"]


class Store:
    """An open simulation store.

    Arguments:
        path: the store directory (or ``.sqlite`` file).
        write: open for a campaign: create the file if needed and take the writer lock.

    Most users never need this class: campaigns open it, and :func:`load_simulations` and
    :func:`store_info` read it.
    """

    def __init__(self, path, *, write: bool = False):
        self.path = Path(path)
        self.file = db_file(self.path)
        self.write = write
        self._lock = None
        self.con = None
        if write:
            if self.path.exists() and not self.path.is_dir() and self.file == self.path / DB_NAME:
                raise ValueError(f"store path {str(path)!r} is an existing file that is not a simulation store; "
                                 f"pass a directory (created if missing) or a path ending in .sqlite")
            _check_sqlite_file(self.file)
            self.file.parent.mkdir(parents=True, exist_ok=True)
            self._take_lock()
        elif not self.file.exists():
            raise FileNotFoundError(f"no simulation store at {str(path)!r} (looked for {str(self.file)!r})")
        else:
            _check_sqlite_file(self.file)
        with _guard(self.file, close=self.close):
            self.con = self._connect()
            if write:
                tables = {r[0] for r in self.con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                ours = {"meta", "batches", "failures"}
                # a telescope store whose creation was interrupted has our tables and an empty meta: reuse it
                if tables - ours or (tables and self._read_meta().get("format", "telescope-simulations")
                                     != "telescope-simulations"):
                    self.close()
                    raise ValueError(f"{str(self.file)!r} is a SQLite database that is not a telescope simulation "
                                     f"store (it has the tables {sorted(tables)}); it was left untouched. Use "
                                     f"another store path")
                self.con.execute("PRAGMA journal_mode=WAL")
                self.con.execute("PRAGMA synchronous=NORMAL")
                self.con.executescript(_SCHEMA)
                readme = self.file.parent / "README.md"
                if self.file.name == DB_NAME and not readme.exists():
                    readme.write_text(_README.format(version=_version()))
            self.meta = self._read_meta()
        if self.meta and self.meta.get("format") != "telescope-simulations":
            self.close()
            raise ValueError(f"{str(self.file)!r} is a SQLite file but not a telescope simulation store")

    def _connect(self) -> sqlite3.Connection:
        """A connection; for reading a file this process may not write, SQLite's read-only mode."""
        if self.write or os.access(self.file, os.W_OK) and os.access(self.file.parent, os.W_OK):
            return sqlite3.connect(str(self.file), timeout=30.0, isolation_level=None)
        uri = self.file.resolve().as_uri()
        con = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30.0, isolation_level=None)
        try:
            con.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            return con
        except sqlite3.OperationalError:  # WAL needs a writable -shm: without a -wal, read it as immutable
            con.close()
            wal = self.file.with_name(self.file.name + "-wal")
            if wal.exists() and wal.stat().st_size > 0:
                raise ValueError(
                    f"store {str(self.file)!r} is read-only and its latest batches are still in {str(wal)!r} "
                    f"(write-ahead log), which SQLite can only read with write access to the folder. Copy the "
                    f".sqlite file together with its -wal file to a writable place, or run `telescope store "
                    f"checkpoint` where the store is writable") from None
            return sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)

    # -- locking ---------------------------------------------------------------------------
    def _take_lock(self) -> None:
        lock_path = self.file.with_name(self.file.name + ".lock")
        fh = open(lock_path, "a+")
        try:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no fcntl (Windows): no cross-process guard
            pass
        except OSError:
            fh.close()
            raise RuntimeError(f"store {str(self.path)!r} is being written by another campaign (lock "
                               f"{str(lock_path)!r} is held); wait for it to finish or use another store") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._lock = fh

    def close(self) -> None:
        con = getattr(self, "con", None)
        if con is not None:
            con.close()
            self.con = None
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- metadata --------------------------------------------------------------------------
    def _read_meta(self) -> dict:
        try:
            rows = self.con.execute("SELECT key, value FROM meta").fetchall()
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):  # a new (empty) database
                return {}
            raise  # read-only, locked, I/O error: never read as "empty"
        meta = {}
        for k, v in rows:
            try:
                meta[k] = json.loads(v)
            except (TypeError, ValueError) as e:
                raise ValueError(f"store {str(self.file)!r} has an unreadable meta entry {k!r} ({e}: {str(v)[:80]!r}); "
                                 f"was it edited by hand?") from None
        return meta

    def set_meta(self, **items: Any) -> None:
        with _transaction(self.con):
            self.con.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                 [(k, json.dumps(v)) for k, v in items.items()])
        self.meta.update(items)

    @property
    def kind(self) -> str:
        return self.meta.get("kind", "simulate")

    # -- batches ---------------------------------------------------------------------------
    def stored(self, level: int) -> dict[int, int]:
        """``{batch index: size}`` of the batches of ``level`` in the store."""
        return dict(self.con.execute("SELECT idx, n FROM batches WHERE level = ?", (level,)).fetchall())

    def has_success(self) -> bool:
        return self.con.execute("SELECT 1 FROM batches WHERE n_failed < n LIMIT 1").fetchone() is not None

    def write_batch(self, level: int, idx: int, seed: int, out: dict) -> None:
        """Append one finished batch (the output of :func:`telescope.campaign.run_batch`) atomically."""
        n = int(out["theta"].shape[0])
        xs = out["x"]
        failures = [(level, idx, i, e) for i, e in enumerate(out["error"]) if e]
        x_low = xs[1] if len(xs) > 1 else None
        secs = out["seconds"]
        row = (level, idx, int(seed), n, len(failures), float(secs[0]), float(secs[1]) if len(secs) > 1 else None,
               _blob(out["theta"], "<f4"), json.dumps(list(out["theta"].shape)),
               _blob(xs[0], "<f4"), json.dumps(list(xs[0].shape)),
               None if x_low is None else _blob(x_low, "<f4"), None if x_low is None else json.dumps(list(x_low.shape)),
               _blob(out["ok"], "u1"), _blob(out["noise_seed"], "<i8"), os.uname().nodename if hasattr(os, "uname")
               else None, datetime.datetime.now().timestamp())
        with _transaction(self.con):
            self.con.execute("INSERT INTO batches VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", row)
            if failures:
                self.con.executemany("INSERT INTO failures VALUES (?,?,?,?)", failures)

    def read(self, level: int = 0, *, include_failed: bool = True, max_batches: int | None = None) -> dict:
        """Arrays of ``level`` ordered by batch index then row: ``theta``, ``x``, ``x_low``, ``ok``, ``noise_seed``.

        With ``max_batches`` only batches ``idx < max_batches`` are read.  The output arrays are allocated once
        and filled batch by batch (failed rows skipped unless ``include_failed``), so reading needs about the
        size of the result plus one batch.
        """
        where = "WHERE level = ?" + (" AND idx < ?" if max_batches is not None else "")
        args = (level,) if max_batches is None else (level, max_batches)
        n_all = self.con.execute(f"SELECT COALESCE(SUM(n), 0) FROM batches {where}", args).fetchone()[0]
        q = (f"SELECT idx, theta, theta_shape, x, x_shape, x_low, x_low_shape, ok, noise_seed FROM batches {where} "
             f"ORDER BY idx")
        out: dict = {}
        pos = n_failed = 0
        for idx, t, ts, x, xs, xl, xls, ok, ns in self.con.execute(q, args):
            column = "theta"
            try:
                theta = _array(t, "<f4", json.loads(ts))
                column = "x"
                xa = _array(x, "<f4", json.loads(xs))
                column = "x_low"
                xla = None if xl is None else _array(xl, "<f4", json.loads(xls))
                column = "ok"
                oka = np.frombuffer(ok, "u1").astype(bool)
                column = "noise_seed"
                nsa = np.frombuffer(ns, "<i8").astype(np.int64)
                column = "row counts"
                n = theta.shape[0]
                if xa.shape[0] != n or oka.shape[0] != n or nsa.shape[0] != n or (xla is not None and xla.shape[0] != n):
                    raise ValueError(f"theta has {n} rows, x {xa.shape[0]}, ok {oka.shape[0]}, noise_seed "
                                     f"{nsa.shape[0]}")
                column = "n"
                if pos + (n if include_failed else int(oka.sum())) > n_all:
                    raise ValueError(f"the batches hold more rows than their n columns sum to ({n_all})")
                column = "shape"
                part = {"theta": theta, "x": xa, "x_low": xla, "ok": oka, "noise_seed": nsa}
                if not out:
                    out = {k: None if v is None else np.empty((n_all, *v.shape[1:]), v.dtype) for k, v in part.items()}
                keep = slice(None) if include_failed else oka
                m = n if include_failed else int(oka.sum())
                for k, v in part.items():
                    if (v is None) != (out[k] is None) or (v is not None and v.shape[1:] != out[k].shape[1:]):
                        raise ValueError(f"{k} has shape {None if v is None else v.shape} per batch, but "
                                         f"{None if out[k] is None else out[k].shape[1:]} per row in the batches before")
                    if v is not None:
                        out[k][pos : pos + m] = v[keep]
            except (TypeError, ValueError) as e:
                raise ValueError(f"store {str(self.file)!r}: batch {idx} of level {level} is unreadable in column "
                                 f"{column!r} ({type(e).__name__}: {e}); was the row edited by hand? Delete it "
                                 f"(DELETE FROM batches WHERE level = {level} AND idx = {idx}) and rerun the campaign "
                                 f"to simulate it again") from None
            pos += m
            n_failed += int((~oka).sum())
        if not out:
            d = self._theta_dim()
            ev = tuple(self.meta.get("x_event_shape") or (0,))
            out = {"theta": np.zeros((0, d), np.float32), "x": np.zeros((0, *ev), np.float32),
                   "x_low": np.zeros((0, *ev), np.float32) if level > 0 else None,
                   "ok": np.zeros(0, bool), "noise_seed": np.zeros(0, np.int64)}
        res = {k: None if v is None else torch.from_numpy(v[:pos]) for k, v in out.items()}
        res["n_failed"] = n_failed
        return res

    def _theta_dim(self) -> int:
        shape = self.meta.get("prior", {}).get("event_shape") or [0]
        return int(shape[0])

    def failures(self, level: int | None = None, limit: int | None = 10) -> list[tuple[int, int, int, str]]:
        q = "SELECT level, idx, row, error FROM failures"
        args: tuple = ()
        if level is not None:
            q, args = q + " WHERE level = ?", (level,)
        q += " ORDER BY level, idx, row"
        if limit is not None:
            q += f" LIMIT {int(limit)}"
        return [tuple(r) for r in self.con.execute(q, args).fetchall()]

    def level_stats(self) -> dict[int, dict]:
        rows = self.con.execute("SELECT level, COUNT(*), SUM(n), SUM(n_failed), SUM(seconds), SUM(seconds_low), "
                                "MAX(finished) FROM batches GROUP BY level").fetchall()
        return {r[0]: {"batches": r[1], "n": r[2], "failed": r[3], "seconds": r[4], "seconds_low": r[5],
                       "last_write": r[6]} for r in rows}
