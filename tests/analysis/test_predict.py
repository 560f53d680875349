"""Predicting a task's sensitivities from its consistency with pre-training: the line, its interval,
the expected claim, leave-one-task-out, and the points read from study stores."""

import numpy as np
import pytest

from fixtures_study import TASKS, fake_store
from vlpeft.analysis import predict
from vlpeft.analysis.stats import fit_line, predict_line, t95


def test_line_and_its_prediction_interval_golden_values():
    line = fit_line([0, 1, 2, 3], [0.0, 1.0, 2.5, 2.9])
    assert (round(line.a, 4), round(line.b, 4), line.n) == (0.07, 1.02, 4)
    y, lo, hi = predict_line(line, 1.5)
    # residuals -0.07, -0.09, 0.39, -0.23: sigma = sqrt(0.218 / 2) = 0.3302;
    # half = t(0.95, 2) * sigma * sqrt(1 + 1/4 + 0) = 2.920 * 0.3302 * 1.118 = 1.078
    assert round(y, 4) == 1.6 and round(hi - y, 3) == round(y - lo, 3) == 1.078
    assert t95(2) == 2.920 and t95(33) == 1.697 and t95(500) == 1.645
    two = fit_line([1, 3], [2.0, 4.0])
    assert predict_line(two, 5) == (6.0, None, None)  # exact through two points: no interval
    assert predict_line(fit_line([2], [0.3]), 9) == (0.3, None, None)  # one point: its value


def test_interval_widens_away_from_the_data():
    line = fit_line([1, 2, 3, 4], [0.1, 0.25, 0.28, 0.41])
    _, lo_in, hi_in = predict_line(line, 2.5)
    _, lo_out, hi_out = predict_line(line, 8.0)
    assert hi_out - lo_out > 1.5 * (hi_in - lo_in)


def test_expected_claim_from_the_predicted_data_sensitivity():
    assert predict.expectation({"value": 0.12, "lo": 0.07, "hi": 0.17}) == "likely inconsistent"
    assert predict.expectation({"value": 0.01, "lo": -0.02, "hi": 0.04}) == "likely consistent"
    assert predict.expectation({"value": 0.06, "lo": 0.01, "hi": 0.11}) == "uncertain"
    assert predict.expectation({"value": 0.2, "lo": None, "hi": None}) == "likely inconsistent"
    assert predict.expectation(None) is None


def test_study_points_read_consistency_and_sensitivity_from_the_store(tmp_path):
    points = predict.study_points(fake_store(tmp_path / "s"))
    by = {p["task"]: p for p in points}
    assert set(by) == {t[0] for t in TASKS}
    assert by["vqa-a"]["lm_loss"] == 3.0 and by["vqa-a"]["checkpoints"] == ["d1"]
    # the data slope is gain x base per tenfold over the best cell (base x (1 + 2 gain + ...)): about gain
    assert by["cap-a"]["data_sensitivity"] == pytest.approx(0.0, abs=0.01)
    assert by["vqa-b"]["data_sensitivity"] == pytest.approx(0.13 / 1.31, rel=0.1)
    assert by["vqa-b"]["data_sensitivity"] > by["cap-b"]["data_sensitivity"] > by["cap-a"]["data_sensitivity"]
    assert by["vqa-a"]["param_sensitivity"] > 0
    assert {c["label"] for c in by["cap-a"]["cells"]} == {"lora", "frozen"}


def test_leave_one_out_predicts_each_task_from_the_others(tmp_path):
    points = predict.study_points(fake_store(tmp_path / "s"))
    rows = predict.leave_one_out(points)
    data = {r["task"]: r for r in rows if r["target"] == "data_sensitivity"}
    assert set(data) == {t[0] for t in TASKS} and all(r["n"] == 3 for r in data.values())
    for r in data.values():
        assert r["error"] == pytest.approx(r["predicted"] - r["measured"])
        assert r["lo"] is not None and r["lo"] < r["predicted"] < r["hi"]
    # the sensitivities are near-linear in lm_loss: inner tasks are predicted within a few points
    assert abs(data["cap-b"]["error"]) < 0.03 and abs(data["vqa-a"]["error"]) < 0.03
    assert data["vqa-b"]["expected"] == "likely inconsistent" and data["vqa-b"]["expected_measured"] == \
        "likely inconsistent"
    s = predict.loo_summary(rows)
    assert s["data_sensitivity"]["n"] == 4 and s["data_sensitivity"]["intervals"] == 4
    assert s["data_sensitivity"]["mae"] == pytest.approx(np.mean([abs(r["error"]) for r in data.values()]))


def test_fit_uses_only_points_with_the_predictor(tmp_path):
    points = predict.study_points(fake_store(tmp_path / "s"))
    points[0] = {**points[0], "lm_loss": None}
    fitted = predict.fit(points)
    assert fitted["data_sensitivity"]["line"].n == 3 and len(fitted["data_sensitivity"]["tasks"]) == 3
    assert predict.nearest(points, "lm_loss", 2.2)["task"] == "cap-b"


def test_cli_validate_prints_leave_one_task_out_for_each_predictor(tmp_path):
    import subprocess
    import sys

    a = fake_store(tmp_path / "a")
    b = fake_store(tmp_path / "b", tasks=TASKS[:2], seed=1)
    r = subprocess.run([sys.executable, "-m", "vlpeft.cli", "advise", "--validate", "--from", str(a), "--from", str(b)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "leave one task out over 4 tasks (6 study tasks" in r.stdout
    assert "predictor lm_loss" in r.stdout and "predictor feature_distance" in r.stdout
    assert "a/vqa-b" in r.stdout and "b/cap-a" in r.stdout and "mean |error|" in r.stdout
    bad = subprocess.run([sys.executable, "-m", "vlpeft.cli", "advise", "--validate"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--from" in bad.stderr and "Traceback" not in bad.stderr
