"""The claims' statistics on synthetic result tables whose truth is known."""

import numpy as np
import pytest

from vlpeft.analysis import stats
from vlpeft.analysis.claims import judge_claims

SIZES = (100, 400, 1600, 6400)
BUDGETS = {1: 1_000, 2: 2_000, 4: 4_000, 8: 8_000, 16: 16_000}


def table(score, seeds=3, sizes=SIZES, budgets=BUDGETS, noise=1.0, seed=0, task="t", label="lora"):
    """Runs with test = score(n_train, params) + N(0, noise)."""
    rng = np.random.default_rng(seed)
    runs = []
    for b, params in budgets.items():
        for n in sizes:
            for s in range(seeds):
                y = score(n, params) + rng.normal(0, noise)
                runs.append({"task": task, "label": label, "method": label, "budget": str(b), "size": str(n),
                             "n_train": n, "seed": s, "test": y, "val": y, "params": params})
    return runs


def verdicts(runs, **kw):
    (row,) = judge_claims(runs, **kw)
    return {k: row[k]["verdict"] for k in ("data_trend", "param_trend", "data_flat", "param_nonmonotonic")}, row


def test_planted_monotone_trends_are_detected():
    v, row = verdicts(table(lambda n, p: 50 + 5 * np.log10(n) + 3 * np.log10(p)))
    assert v["data_trend"] == "holds" and v["param_trend"] == "holds"
    assert v["data_flat"] == "does not hold"
    assert v["param_nonmonotonic"] == "does not hold"  # monotone: the best budget is the largest
    assert row["data_trend"]["slope"] == pytest.approx(5, abs=1.0)
    assert row["param_trend"]["slope"] == pytest.approx(3, abs=1.0)


def test_planted_flat_data_curve_is_judged_flat():
    v, row = verdicts(table(lambda n, p: 60.0, noise=0.3), delta=0.05)  # margin 3 points
    assert v["data_flat"] == "holds"
    assert v["data_trend"] in ("does not hold", "inconclusive")
    assert abs(row["data_flat"]["effect"]) < 1


def test_planted_interior_peak_is_judged_non_monotonic():
    def peak(n, p):
        return 60 - 4 * (np.log2(p / 4_000)) ** 2  # best at the middle budget
    v, row = verdicts(table(peak, noise=0.5))
    assert v["param_nonmonotonic"] == "holds"
    assert row["param_nonmonotonic"]["best_params"] == 4_000


@pytest.mark.parametrize("claim", ["data_trend", "param_trend", "param_nonmonotonic"])
def test_noise_alone_rarely_holds_at_the_stated_error_rate(claim):
    trials = 150
    holds = 0
    for k in range(trials):
        runs = table(lambda n, p: 50.0, seeds=3, sizes=(100, 400, 1600), budgets={1: 1_000, 2: 2_000, 4: 4_000},
                     noise=2.0, seed=1000 + k)
        v, _ = verdicts(runs)
        holds += v[claim] == "holds"
    # alpha = 0.05; the permutation test is exact, the bootstrap a little liberal with 3 seeds
    assert holds / trials <= 0.10, holds


def test_two_budgets_or_one_seed_make_claims_untestable_not_confident():
    v, _ = verdicts(table(lambda n, p: 50.0, budgets={1: 1_000, 2: 2_000}))
    assert v["param_nonmonotonic"] == "untestable"
    v, _ = verdicts(table(lambda n, p: 50.0, seeds=1))
    assert v["data_flat"] == "untestable"


def test_frozen_rows_get_no_claims():
    runs = table(lambda n, p: 50.0) + table(lambda n, p: 40.0, label="frozen", budgets={None: 0})
    assert {r["label"] for r in judge_claims(runs)} == {"lora"}


def test_trend_statistics_match_textbook_values():
    t = stats.trend([1, 10, 100, 1000], [1.0, 2.0, 3.0, 4.0], ["a"] * 4, permutations=5000)
    assert t.rho == pytest.approx(1.0) and t.slope == pytest.approx(1.0)
    assert t.p_value == pytest.approx(2 / 24, abs=0.02)  # 2 of 4! orders are as extreme
    assert stats.rank(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [2.5, 0.0, 2.5, 1.0]
    lo, hi = stats.bootstrap_ci([1.0, 2.0, 3.0, 4.0])
    assert lo < 2.5 < hi


def test_baseline_check_flags_the_cells_that_learned_nothing():
    from vlpeft.analysis.claims import baseline_check

    runs = []
    for label, score in (("frozen", 36.0), ("lora", 40.5), ("full", 60.0)):
        for r in table(lambda n, p: score, seeds=2, sizes=(100, 400), budgets={1: 1_000}, noise=0.1, label=label):
            runs.append({**r, "majority": 40.2})
    checks = {c["label"]: c for c in baseline_check(runs, delta=0.05)}
    assert set(checks) == {"lora", "full"}  # the frozen model is the baseline, not a cell to judge
    assert checks["full"]["cells"] == 2 and checks["full"]["flagged"] == []
    assert checks["full"]["headroom"] == pytest.approx(
        60 - 40.2, abs=0.2
    )  # many deltas: flagged cells are undertrained
    # the majority answer (40.2) beats the frozen model (36): 40.5 is within delta = 5 % of 60 of it
    assert [f["size"] for f in checks["lora"]["flagged"]] == ["100", "400"]
    assert checks["lora"]["flagged"][0]["baseline"] == 40.2 and checks["lora"]["flagged"][0]["margin"] == pytest.approx(
        3.0, abs=0.05
    )
    # without a majority answer (captioning) the frozen model's score is the baseline
    assert (
        baseline_check([{**r, "majority": None} for r in runs if r["label"] != "full"], delta=0.05)[0]["flagged"] == []
    )
