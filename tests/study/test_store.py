"""The results store under a failing disk: SQLite's own error becomes one line naming the store."""

import sqlite3

import pytest

from vlpeft.errors import DiskError
from vlpeft.study import store


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
