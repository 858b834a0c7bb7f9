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

from .database import Store
from .reading import checkpoint, export_arrays, load_simulations, store_info
from .schema import _SCHEMA, DB_NAME, SCHEMA_VERSION, _version, damaged, db_file

__all__ = ["Store", "checkpoint", "export_arrays", "load_simulations", "store_info"]

# names that lived in the single-module store.py, kept importable from here
_OLD_PATH = (_SCHEMA, DB_NAME, SCHEMA_VERSION, _version, damaged, db_file)
