"""The embedded simulation store: one SQLite file, append-only, crash-safe, resumable.

A campaign (:func:`telescope.simulate` or :func:`telescope.simulate_levels` with ``store=``)
writes every finished batch in **one SQLite transaction**, from the parent process, as soon
as the batch completes.  A transaction is atomic, so a ``kill -9`` (or a power cut) at any
moment leaves the file with whole batches only: at most the batches in flight are lost, and
running the same call again simulates only the missing batch indices.  Because a batch is a
pure function of ``(seed, level, batch index, batch size)`` the resumed data are bitwise
identical to an uninterrupted run.

Why SQLite: it ships with Python (no dependency), its file format is stable, documented and
readable from every language and by the ``sqlite3`` command-line tool, and its journal
gives the atomic, durable appends we need — HDF5 corrupts on a crash mid-write and zarr
needs a directory of chunks plus a separate consistency protocol.  We use write-ahead
logging (``journal_mode=WAL``, ``synchronous=NORMAL``): commits survive a crash of the
process, readers never block the writer, and a commit costs no ``fsync``.

Layout: ``store="runs/name"`` is a directory holding ``simulations.sqlite``, a ``README.md``
describing the format, and a lock file (held while a campaign writes; the OS releases it if
the process dies).  A path ending in ``.sqlite``/``.sqlite3``/``.db`` is used as the file itself.

Tables (``sqlite3 runs/name/simulations.sqlite .schema`` prints them with comments):

* ``meta(key, value)`` — JSON values: ``kind`` (``simulate`` or ``levels``), ``seed``,
  ``prior`` (type, repr, fingerprint of its draws, state fingerprint of its parameters and density),
  ``simulators`` (name, fingerprint of the code and captured values, code fingerprint, config per
  level), ``levels`` (target ``n``, ``batch_size`` and seed per level), ``x_event_shape``,
  ``telescope_version``, ``created``, ``seed_scheme`` (2: every 64-bit seed has its own stream).
* ``batches`` — one row per finished batch, keyed ``(level, idx)``: batch ``seed``, ``n``,
  ``n_failed``, wall time ``seconds`` (and ``seconds_low`` for the lower level of a pair),
  and the arrays ``theta``, ``x``, ``x_low`` (level ``l >= 1`` of a ladder: ``G_{l-1}`` on the
  same theta and noise), ``ok`` and ``noise_seed`` as little-endian BLOBs with JSON shapes.
* ``failures(level, idx, row, error)`` — the text of every failed simulation.
* ``summary`` — a view with counts, failures and seconds per level.

Reading without telescope::

    import json, sqlite3, numpy as np
    con = sqlite3.connect("runs/name/simulations.sqlite")
    rows = con.execute("SELECT theta, theta_shape, x, x_shape, ok FROM batches WHERE level = 0 ORDER BY idx")
    theta = np.concatenate([np.frombuffer(t, "<f4").reshape(json.loads(ts)) for t, ts, *_ in rows])

``theta``, ``x``, ``x_low`` are ``<f4`` (float32), ``ok`` is ``u1`` (1 = usable), ``noise_seed``
is ``<i8``: the seed that drew the sample's noise — when it equals the batch seed the sample is
row ``i`` of a draw for the whole batch, otherwise it was simulated alone from that seed.

Copying a store: while a campaign runs (or after it was killed) the latest batches live in the
write-ahead log ``simulations.sqlite-wal`` next to the file; a finished campaign folds it back.  Copy
the ``-wal`` file with the ``.sqlite`` file, or first run ``telescope store checkpoint PATH``
(:func:`checkpoint`), which moves everything into the ``.sqlite`` file.

Damaged or foreign files are refused, never repaired or overwritten: a file that is not SQLite,
a SQLite database without telescope's tables (it is left untouched), a corrupted page, or a
hand-edited row that does not parse all raise a ValueError naming the file (and the batch).  A
read-only store is read through SQLite's read-only mode.
"""

from __future__ import annotations

import datetime
import json
import os
import sqlite3
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["Store", "checkpoint", "export_arrays", "load_simulations", "store_info"]

SCHEMA_VERSION = 1
DB_NAME = "simulations.sqlite"
_SUFFIXES = (".sqlite", ".sqlite3", ".db")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,  -- kind, seed, prior, simulators, levels, x_event_shape, ...
    value TEXT NOT NULL      -- JSON
);
CREATE TABLE IF NOT EXISTS batches (
    level       INTEGER NOT NULL,  -- 0 for simulate(); ladder level l for simulate_levels()
    idx         INTEGER NOT NULL,  -- batch index within the level (rows are ordered by idx, then row)
    seed        INTEGER NOT NULL,  -- batch seed s: noise from s, theta from theta_seed(s)
    n           INTEGER NOT NULL,  -- simulations in the batch
    n_failed    INTEGER NOT NULL,  -- simulations that raised or returned NaN/inf
    seconds     REAL NOT NULL,     -- wall time of the simulator on this batch (level l)
    seconds_low REAL,              -- wall time of the level l-1 simulator (ladders, l >= 1)
    theta       BLOB NOT NULL,     -- float32 little-endian, shape theta_shape
    theta_shape TEXT NOT NULL,     -- JSON list, e.g. [100, 2]
    x           BLOB NOT NULL,     -- float32 little-endian, shape x_shape (NaN rows where failed)
    x_shape     TEXT NOT NULL,
    x_low       BLOB,              -- ladders, l >= 1: level l-1 output on the same theta and noise
    x_low_shape TEXT,
    ok          BLOB NOT NULL,     -- uint8 per simulation: 1 usable, 0 failed
    noise_seed  BLOB NOT NULL,     -- int64 little-endian per simulation
    host        TEXT,              -- machine that wrote the batch
    finished    REAL NOT NULL,     -- unix time of the commit
    PRIMARY KEY (level, idx)
);
CREATE TABLE IF NOT EXISTS failures (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    row   INTEGER NOT NULL,        -- row within the batch
    error TEXT NOT NULL,           -- exception text, or 'non-finite output (NaN or inf)'
    PRIMARY KEY (level, idx, row)
);
CREATE VIEW IF NOT EXISTS summary AS
    SELECT level, COUNT(*) AS batches, SUM(n) AS n, SUM(n_failed) AS failed,
           SUM(seconds) AS seconds, SUM(seconds_low) AS seconds_low
    FROM batches GROUP BY level;
"""

_README = """# telescope simulation store

`simulations.sqlite` is a SQLite 3 database written by telescope {version}. Every finished batch
of simulations is one row of `batches`, committed in one transaction: the file never holds a
partial batch. Running the same `simulate(...)` call again resumes the campaign.

    sqlite3 simulations.sqlite .schema                 # tables, with comments
    sqlite3 simulations.sqlite "SELECT * FROM summary"  # counts, failures, seconds per level
    sqlite3 simulations.sqlite "SELECT * FROM failures LIMIT 10"

Arrays are BLOBs: `theta`, `x`, `x_low` are little-endian float32 (`numpy.frombuffer(b, "<f4")`),
`ok` is uint8 and `noise_seed` little-endian int64; their shapes are the JSON lists in `*_shape`.
Rows are ordered by batch `idx`, then by row within the batch. `meta` holds JSON: the simulator
names, fingerprints and configurations, the prior, the seed and the batch sizes.

In Python without telescope:

    import json, sqlite3, numpy as np
    con = sqlite3.connect("simulations.sqlite")
    q = "SELECT theta, theta_shape, x, x_shape, ok FROM batches WHERE level = 0 ORDER BY idx"
    parts = [(np.frombuffer(t, "<f4").reshape(json.loads(ts)), np.frombuffer(x, "<f4").reshape(json.loads(xs)),
              np.frombuffer(ok, "u1").astype(bool)) for t, ts, x, xs, ok in con.execute(q)]
    theta, x, ok = (np.concatenate(p) for p in zip(*parts))
    theta, x = theta[ok], x[ok]      # drop failed simulations
"""


def db_file(path) -> Path:
    """The SQLite file of the store at ``path`` (a directory, or a file ending in .sqlite/.db)."""
    path = Path(path)
    if path.suffix in _SUFFIXES or path.is_file():
        return path
    return path / DB_NAME


def _blob(a: np.ndarray, dtype: str) -> bytes:
    return np.ascontiguousarray(a, dtype=dtype).tobytes()


def _array(b: bytes, dtype: str, shape) -> np.ndarray:
    a = np.frombuffer(b, dtype=dtype).reshape(shape)
    return a.astype(a.dtype.newbyteorder("="), copy=False)  # native byte order for torch


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
        try:
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
        except sqlite3.DatabaseError as e:
            self.close()
            raise damaged(self.file, e) from None
        except ValueError:
            self.close()
            raise
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


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error) on an autocommit connection."""

    def __init__(self, con: sqlite3.Connection):
        self.con = con

    def __enter__(self):
        self.con.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, *exc):
        self.con.execute("COMMIT" if exc_type is None else "ROLLBACK")


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _check_sqlite_file(file: Path) -> None:
    """Refuse a file that exists, is not empty and is not SQLite (it is never overwritten)."""
    if not file.is_file() or file.stat().st_size == 0:
        return
    with open(file, "rb") as fh:
        head = fh.read(16)
    if head != _SQLITE_MAGIC:
        raise ValueError(f"{str(file)!r} is not a readable telescope simulation store: it is a "
                         f"{file.stat().st_size}-byte file that is not SQLite (it starts with {head[:8]!r}); it was "
                         f"left untouched. Use another store path, or delete the file if it is not needed")


def damaged(file, e: Exception) -> ValueError:
    """The error for a store SQLite cannot read: names the file, SQLite's message and how to recover."""
    return ValueError(f"{str(file)!r} is not a readable telescope simulation store: SQLite says {e!s} "
                      f"({type(e).__name__}). If the file is damaged, recover its readable rows into a new file with "
                      f"`sqlite3 {file} .recover | sqlite3 recovered.sqlite`, or check it with "
                      f"`sqlite3 {file} 'PRAGMA integrity_check'`")


class _guard:
    """Turn SQLite errors while reading a store into :func:`damaged` errors."""

    def __init__(self, file):
        self.file = file

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and issubclass(exc_type, sqlite3.DatabaseError):
            raise damaged(self.file, exc) from None
        return False


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("telescope-sbi")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "unknown"


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
