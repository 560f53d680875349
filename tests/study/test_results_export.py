"""The store's exports: results.csv and results.parquet hold every row and field, whatever mix of
value kinds a study's configs give one column."""

import pandas as pd

from vlpeft import store
from vlpeft.study.export import export_all, one_type
from vlpeft.study.spec import Cell


def test_a_column_mixing_counts_and_fractions_exports_to_parquet(tmp_path):
    # the README's study: data_sizes [100, 1000, "50%"] put ints and a string in config.data_size
    con = store.connect(tmp_path / "results.sqlite")
    for i, size in enumerate([100, 1000, "50%"]):
        cell = Cell(id=f"t.lora.b8.n{size}.s0", task="t", label="lora", method="lora", budget="8", data_size=size,
                    seed=0, lr=None)
        store.add_cells(con, [(cell, {"task": "t", "data_size": size, "flag": [True, 2, None][i]})])
        if i < 2:  # the last cell has not run: its metrics columns are missing
            store.mark_running(con, cell.id)
            store.finish(con, cell.id, {"status": "done", "started": 1.0, "ended": 2.0,
                                        "metrics": {"test_score": 0.5 + i, "data_size": [100, 1000][i]}})
    export_all(con, tmp_path)
    frame = pd.read_parquet(tmp_path / "results.parquet")
    assert len(frame) == 3 and list(frame["config.data_size"]) == ["100", "1000", "50%"]
    assert list(frame["config.flag"][:2]) == ["True", "2"] and frame["config.flag"].isna().iloc[2]
    assert list(frame["m.data_size"][:2]) == [100, 1000] and frame["m.test_score"].isna().iloc[2]
    csv = (tmp_path / "results.csv").read_text().splitlines()
    assert len(csv) == 4 and csv[0].split(",").count("config.data_size") == 1


def test_one_type_leaves_single_kind_and_numeric_columns_alone():
    for values in (["a", None, "b"], [1, 2.5, None], [True, False]):
        column = pd.Series(values, dtype=object)
        assert one_type(column) is column
