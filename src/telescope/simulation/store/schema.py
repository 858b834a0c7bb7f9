"""The store's file format: the SQLite schema and README, the file name, array BLOBs, file checks and errors.

Everything here is plain SQLite and numpy; :class:`~telescope.simulation.store.database.Store` uses it to
write and read a store, and the schema below is what ``sqlite3 simulations.sqlite .schema`` prints.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

__all__ = ["DB_NAME", "SCHEMA_VERSION", "damaged", "db_file"]

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
    """Turn SQLite errors while using a store into :func:`damaged` errors; with ``close``, call it first on any
    error (a store being opened is closed before the error propagates)."""

    def __init__(self, file, close=None):
        self.file, self.close = file, close

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and self.close is not None:
            self.close()
        if exc_type is not None and issubclass(exc_type, sqlite3.DatabaseError):
            raise damaged(self.file, exc) from None
        return False


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("telescope-sbi")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "unknown"
