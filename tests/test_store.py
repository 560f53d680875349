"""The results store (vlpeft.store): under a failing disk SQLite's own error becomes one line naming
the store; the study's record in its meta table is typed, and reads stores of older versions."""

import json
import sqlite3

import pytest

from vlpeft import store
from vlpeft.errors import DiskError, UserError


class FullAtCommit:
    """A connection whose COMMIT meets a full disk, as SQLite reports it (and rolls back by itself)."""

    def __init__(self, con):
        self.con = con

    @property
    def in_transaction(self):
        return self.con.in_transaction

    def execute(self, sql, *args):
        if sql == "COMMIT":
            self.con.execute("ROLLBACK")
            e = sqlite3.OperationalError("database or disk is full")
            e.sqlite_errorcode = 13  # SQLITE_FULL
            raise e
        return self.con.execute(sql, *args)

    def executemany(self, sql, rows):
        return self.con.executemany(sql, rows)


def test_a_full_disk_at_commit_is_one_line_and_the_store_keeps_what_it_had(tmp_path):
    con = store.connect(tmp_path / "results.sqlite")
    store.set_meta(con, {"name": "kept"})
    with pytest.raises(DiskError, match=r"results.sqlite: cannot write the results store \(database or disk is "
                                        r"full\); every finished run is kept"):
        store.set_meta(FullAtCommit(con), {"name": "lost"})
    assert store.get_meta(con, "name") == "kept" and not con.in_transaction


def test_other_database_errors_are_not_called_a_full_disk(tmp_path):
    con = store.connect(tmp_path / "results.sqlite")
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        with store.transaction(con):
            con.execute("SELECT * FROM nowhere")
    assert not con.in_transaction


def test_the_study_record_is_typed_written_only_when_changed_and_reads_older_stores(tmp_path):
    path = tmp_path / "results.sqlite"
    con = store.connect(path)
    ident = {"model": "m", "checkpoints": {"m": "d1"}}
    # as versions before StudyMeta wrote it: text, and JSON with sorted keys; no pre-training record
    store.set_meta(con, {"name": "old", "created": "2026-01-01T00:00:00+0000", "fingerprint": "f",
                         "identity": json.dumps(ident, sort_keys=True)})
    meta = store.study_meta(tmp_path)  # a study folder, read-only
    assert meta == store.StudyMeta(name="old", created="2026-01-01T00:00:00+0000", fingerprint="f", identity=ident)
    assert meta.spec == {} and meta.consistency == {} and meta.pretrain is None
    assert store.study_meta(path) == store.study_meta(con) == store.read(tmp_path)[0] == meta
    assert store.meta_text(name="old", identity=ident) == {"name": "old", "identity": json.dumps(ident, sort_keys=True)}
    before = path.read_bytes()
    assert store.write_meta(con, name="old", identity=ident) == {}  # the same text: nothing written
    assert path.read_bytes() == before
    record = {"steps": 40, "seed": 3, "objectives": ["itc", "itm", "lm"]}
    assert store.write_meta(con, pretrain=record) == {"pretrain": json.dumps(record, sort_keys=True)}
    assert store.study_meta(con).pretrain == record and store.read_meta(path)["name"] == "old"
    with pytest.raises(TypeError, match="not a field of StudyMeta: nmae"):
        store.write_meta(con, nmae="typo")
    store.set_meta(con, {"consistency": "{not json"})
    with pytest.raises(UserError, match="the study's consistency is not JSON"):
        store.study_meta(con)
    with pytest.raises(UserError, match="no results.sqlite here"):
        store.study_meta(tmp_path / "elsewhere")
