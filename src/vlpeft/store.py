"""The results store: `results.sqlite` in the study folder, one row per cell, written by one process.

Only the driver (the process running `vlpeft study`) writes; workers and Ray tasks return their
result to it. Each state change is one SQLite transaction, so a kill at any moment leaves every row
either as it was or as it became: a cell is never half-recorded and never has two rows (the cell ID
is the primary key). Rows:

    id          the cell's stable ID                    status   pending | running | done | failed
    task, label, method, budget, data_size, seed, lr   the grid coordinates
    config      the full resolved FinetuneConfig (JSON) reason   why it failed (one line)
    metric, test_score, best_val_score                  metrics  every field of the run's metrics.json
    converged   1 / 0: validation had stopped improving when the run ended (NULL: not judged)
    length      a name of the spec's `lengths`          length_check  k for a length-check cell (NULL: the grid)
    host, started, ended (unix seconds), attempts

The meta table (key -> text) holds the study's own record, `StudyMeta`: the driver writes it with
`write_meta`, readers get it typed from `read` and `study_meta`. A utility below both the study (which
writes) and the analysis (which reads): it imports neither.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

from vlpeft.errors import DiskError, UserError
from vlpeft.faults import crash_point

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    task TEXT NOT NULL, label TEXT NOT NULL, method TEXT NOT NULL, budget TEXT,
    data_size TEXT NOT NULL, seed INTEGER NOT NULL, lr REAL,
    config TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    reason TEXT, metric TEXT, test_score REAL, best_val_score REAL, metrics TEXT,
    host TEXT, started REAL, ended REAL, attempts INTEGER NOT NULL DEFAULT 0,
    length TEXT, length_check INTEGER, converged INTEGER
);
"""
COLUMNS = ("id", "task", "label", "method", "budget", "data_size", "seed", "lr", "config", "status", "reason",
           "metric", "test_score", "best_val_score", "metrics", "host", "started", "ended", "attempts", "length",
           "length_check", "converged")
ADDED = {"length": "TEXT", "length_check": "INTEGER", "converged": "INTEGER"}  # columns newer than the first stores


def connect(path: str | Path) -> sqlite3.Connection:
    path = Path(path)
    try:
        con = sqlite3.connect(path, timeout=60, isolation_level=None)  # explicit BEGIN ... COMMIT below
        con.execute("PRAGMA journal_mode=DELETE")  # no -wal/-shm files beside the store
        con.execute("PRAGMA synchronous=FULL")
        con.executescript(SCHEMA)
        have = {r[1] for r in con.execute("PRAGMA table_info(runs)")}
        for column, kind in ADDED.items():  # a store from before the column existed
            if column not in have:
                con.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")
    except sqlite3.DatabaseError as e:
        _disk_full(e, path)
        raise UserError(f"{path}: not a vlpeft results store ({e})") from e
    con.row_factory = sqlite3.Row
    return con


# SQLite's primary result codes for a failing disk: READONLY, IOERR, FULL, CANTOPEN
_DISK_CODES = {8, 10, 13, 14}


def _disk_full(e: sqlite3.Error, path) -> None:
    """A store that cannot be written for lack of space or permission: one line. SQLite has rolled the
    transaction back, so every row is as it was before it."""
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _DISK_CODES:
        raise DiskError(f"{path}: cannot write the results store ({e}); every finished run is kept: free some "
                        f"space and run the same command again to go on") from e


def _path(con) -> str:
    try:
        return next(r[2] for r in con.execute("PRAGMA database_list") if r[1] == "main")
    except (sqlite3.Error, StopIteration):
        return "results.sqlite"


class _Tx:
    def __init__(self, con):
        self.con = con

    def __enter__(self):
        try:
            self.con.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            _disk_full(e, _path(self.con))
            raise
        return self.con

    def __exit__(self, kind, value, _tb):
        if kind is None:
            try:
                self.con.execute("COMMIT")
                return False
            except sqlite3.OperationalError as e:
                value = e
        if self.con.in_transaction:  # (SQLite may have rolled back already: a full disk does)
            try:
                self.con.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        if isinstance(value, sqlite3.Error):
            _disk_full(value, _path(self.con))
        if kind is None:
            raise value
        return False


def transaction(con: sqlite3.Connection) -> _Tx:
    return _Tx(con)


def get_meta(con, key: str) -> str | None:
    """The raw text of one meta key (None: not recorded)."""
    row = con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def set_meta(con, values: dict[str, str]) -> None:
    """Write raw meta texts, in one transaction (`write_meta` writes StudyMeta fields)."""
    with transaction(con):
        con.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(values.items()))


# The study's record in the meta table. Fields stored as plain text; every other is JSON.
TEXT_FIELDS = ("name", "created", "fingerprint")


@dataclass(frozen=True)
class StudyMeta:
    """A study's own record: the store's meta table, typed. Each field is one key of the table; a key
    a store lacks (one made by an older version) reads as the field's default, and keys this version
    does not know are left alone."""

    name: str | None = None  # the spec's name (a folder holds one study; its report is titled so)
    created: str | None = None  # when the store was made, local time (ISO 8601)
    fingerprint: str | None = None  # the digest of `identity`: equal for the same study
    identity: dict[str, Any] = field(default_factory=dict)  # what every cell shares (runner.study_fingerprint)
    spec: dict[str, Any] = field(default_factory=dict)  # the spec as last run (its StudySpec as a dict)
    consistency: dict[str, Any] = field(default_factory=dict)  # task -> its consistency measures
    # the study checkpoint's pre-training record (its pretrain.json) when the study last started or
    # resumed; None: it has none (a hub id, a transformers folder), or the store predates the record
    pretrain: dict[str, Any] | None = None

    @classmethod
    def from_table(cls, table: Mapping[str, str]) -> StudyMeta:
        values: dict[str, Any] = {}
        for f in fields(cls):
            text = table.get(f.name)
            try:
                value = text if f.name in TEXT_FIELDS else (json.loads(text) if text else None)
            except ValueError as e:
                raise UserError(f"results store: the study's {f.name} is not JSON ({e})") from None
            if value is not None:
                values[f.name] = value
        return cls(**values)


def meta_text(**values: Any) -> dict[str, str]:
    """The meta table's text of StudyMeta fields: the TEXT_FIELDS as they are, the others as JSON with
    sorted keys (what every version has written)."""
    unknown = sorted(set(values) - {f.name for f in fields(StudyMeta)})
    if unknown:
        raise TypeError(f"not a field of StudyMeta: {', '.join(unknown)}")
    return {k: str(v) if k in TEXT_FIELDS else json.dumps(v, sort_keys=True, default=str) for k, v in values.items()}


def write_meta(con, **values: Any) -> dict[str, str]:
    """Record StudyMeta fields (`write_meta(con, name=..., identity={...})`), in one transaction, each
    only when its text changed: a rerun that changes nothing leaves the file as it was. Returns what
    was written."""
    changed = {k: v for k, v in meta_text(**values).items() if get_meta(con, k) != v}
    if changed:
        set_meta(con, changed)
    return changed


def study_meta(where: str | Path | sqlite3.Connection) -> StudyMeta:
    """The StudyMeta of an open store, or of a study folder or store file (opened read-only)."""
    if isinstance(where, (str, Path)):
        path = Path(where) / "results.sqlite" if Path(where).is_dir() else Path(where)
        if not path.is_file():
            raise UserError(f"{where}: no results.sqlite here (not a study folder)")
        return StudyMeta.from_table(read_meta(path))
    return StudyMeta.from_table(dict(where.execute("SELECT key, value FROM meta").fetchall()))


def add_cells(con, cells: Iterable[tuple[Any, dict]]) -> int:
    """Insert a pending row for each (cell, config) not yet in the store; returns how many were new."""
    new = 0
    with transaction(con):
        for cell, config in cells:
            cur = con.execute(
                "INSERT OR IGNORE INTO runs (id, task, label, method, budget, data_size, seed, lr, config, status, "
                "length, length_check) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                (cell.id, cell.task, cell.label, cell.method, cell.budget, str(cell.data_size), cell.seed, cell.lr,
                 json.dumps(config, sort_keys=True), cell.length, cell.check))
            new += cur.rowcount
    return new


def rows(con, where: str = "", args: tuple = ()) -> list[dict[str, Any]]:
    return [dict(r) for r in con.execute(f"SELECT * FROM runs {where} ORDER BY rowid", args)]


def mark_running(con, cell_id: str) -> None:
    with transaction(con):
        con.execute("UPDATE runs SET status = 'running', reason = NULL, host = ?, started = ?, ended = NULL, "
                    "attempts = attempts + 1 WHERE id = ?", (socket.gethostname(), time.time(), cell_id))


def finish(con, cell_id: str, result: dict[str, Any]) -> None:
    """Record a run's outcome: {"status": "done", "metrics": {...}} or {"status": "failed", "reason": "..."}."""
    m = result.get("metrics") or {}
    with transaction(con):
        converged = m.get("converged")
        con.execute("UPDATE runs SET status = ?, reason = ?, metric = ?, test_score = ?, best_val_score = ?, "
                    "metrics = ?, converged = ?, host = ?, started = COALESCE(?, started), ended = ? WHERE id = ?",
                    (result["status"], result.get("reason"), m.get("metric"), m.get("test_score"),
                     m.get("best_val_score"), json.dumps(m) if m else None,
                     None if converged is None else int(converged),
                     result.get("host") or socket.gethostname(), result.get("started"),
                     result.get("ended") or time.time(), cell_id))
        crash_point("result_write")


def reset_interrupted(con) -> int:
    """Rows left 'running' by a killed driver go back to pending; returns how many."""
    with transaction(con):
        return con.execute("UPDATE runs SET status = 'pending' WHERE status = 'running'").rowcount


def counts(con) -> dict[str, int]:
    return {r[0]: r[1] for r in con.execute("SELECT status, COUNT(*) FROM runs GROUP BY status")}


def read(folder: str | Path) -> tuple[StudyMeta, list[dict[str, Any]]]:
    """(meta, rows) of a study folder's store, opened read-only (a reader never changes it, and may
    read while the study runs)."""
    path = Path(folder) / "results.sqlite"
    if not path.is_file():
        raise UserError(f"{folder}: no results.sqlite here (not a study folder)")
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        con.row_factory = sqlite3.Row
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        found = [dict(r) for r in con.execute("SELECT * FROM runs ORDER BY rowid")]
        con.close()
    except sqlite3.DatabaseError as e:
        raise UserError(f"{path}: not a vlpeft results store ({e})") from None
    return StudyMeta.from_table(meta), found


def read_meta(path: str | Path) -> dict[str, str]:
    """The meta table of the store file `path`, raw (key -> text), opened read-only (a foreign store
    stays untouched)."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        found = dict(con.execute("SELECT key, value FROM meta").fetchall())
        con.close()
    except sqlite3.DatabaseError as e:
        raise UserError(f"{path}: not a vlpeft results store ({e})") from None
    return found

