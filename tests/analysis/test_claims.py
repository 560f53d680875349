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


def rising(n, p):
    return 50 + 5 * np.log10(n)


def test_a_claim_resting_on_a_run_still_improving_is_confounded():
    runs = table(rising, budgets={1: 1_000, 2: 2_000, 4: 4_000})
    for r in runs:
        r["converged"] = not (r["n_train"] == 400 and r["budget"] == "2" and r["seed"] == 0)  # one middle cell
    _, row = verdicts(runs)
    assert row["data_trend"]["verdict"] == "confounded" and row["data_trend"]["measured"] == "holds"
    assert row["data_trend"]["cells_not_converged"] == 1 and row["data_trend"]["cells"] == 12
    assert row["data_trend"]["confounded_by"] == ["convergence"]
    # "data does not matter" compares the smallest and the largest size only: the middle cell is not under it
    assert row["data_flat"]["verdict"] == "does not hold" and row["data_flat"]["cells"] == 6
    assert row["param_trend"]["verdict"] == "confounded"
    everything = [{**r, "converged": True} for r in runs]
    assert verdicts(everything)[0]["data_trend"] == "holds"
    unknown = [{**r, "converged": None} for r in runs]  # records from before convergence was judged
    assert verdicts(unknown)[0]["data_trend"] == "holds"


def test_the_length_check_confounds_the_verdicts_it_changes():
    # Trained as long as the grid: flat. Trained 4x longer, the checked run at the largest size gains 30 points.
    runs = table(lambda n, p: 60.0, noise=0.3, budgets={1: 1_000, 2: 2_000, 4: 4_000})
    checks = [{**r, "test": r["test"] + (30 if r["n_train"] == max(SIZES) else 0)}
              for r in runs if r["budget"] == "2" and r["seed"] == 0 and r["n_train"] in (min(SIZES), max(SIZES))]
    v, _ = verdicts(runs)
    assert v["data_flat"] == "holds"
    (row,) = judge_claims(runs, checks=checks)
    assert row["length_check"]["runs"] == 2 and "data_flat" in row["length_check"]["changed"]
    assert row["data_flat"]["verdict"] == "confounded" and row["data_flat"]["measured"] == "holds"
    assert row["data_flat"]["confounded_by"] == ["length check"]
    same = [dict(r) for r in checks]
    for r in same:
        r["test"] = next(x["test"] for x in runs if (x["budget"], x["size"], x["seed"]) ==
                         (r["budget"], r["size"], r["seed"]))
    (row,) = judge_claims(runs, checks=same)  # a check that changes nothing confounds nothing
    assert row["length_check"]["changed"] == [] and row["data_flat"]["verdict"] == "holds"


def test_benjamini_hochberg_matches_its_textbook_values():
    p = [0.01, 0.04, 0.03, 0.005, 0.5]
    assert stats.bh_adjust(p) == pytest.approx([0.025, 0.05, 0.05, 0.025, 0.5])
    assert stats.bh_adjust([]) == [] and stats.bh_adjust([0.3]) == [0.3]


def test_verdicts_use_adjusted_p_values_and_keep_the_raw_ones():
    rows = judge_claims(table(rising, label="a") + table(lambda n, p: 50.0, label="b", seed=3))
    for row in rows:
        for claim in ("data_trend", "param_trend"):
            d = row[claim]
            assert d["p_adjusted"] >= d["p"] - 1e-12
    from vlpeft.analysis.claims import table as claims_table

    flat = claims_table(rows)
    assert len(flat) == 8 and {r["claim"] for r in flat} == {"data_trend", "param_trend", "data_flat",
                                                               "param_nonmonotonic"}
    assert all(r["p_adjusted"] >= r["p"] - 1e-12 for r in flat if not np.isnan(r["p"]))


def test_a_rise_smaller_than_delta_is_said_to_be_one():
    runs = table(lambda n, p: 60 + 0.5 * np.log10(n), noise=0.1, seeds=4)  # rises by 0.9 over the sizes: δ = 3
    v, row = verdicts(runs)
    assert v["data_trend"] == "holds" and v["data_flat"] == "holds"
    assert row["data_trend"]["small_effect"] and row["data_flat"]["small_effect"]
    from vlpeft.analysis.findings import claim_sentence

    assert "by less than δ for lora: a small effect" in claim_sentence([row], "data_trend")


@pytest.mark.parametrize("where,state,verdict", [(max(SIZES), "still_improving", "holds"),
                                                  (min(SIZES), "still_improving", "confounded"),
                                                  (max(SIZES), "flat_at_start", "confounded"),
                                                  (max(SIZES), "too_short", "confounded")])
def test_only_a_rise_that_more_training_could_only_steepen_stands(where, state, verdict):
    runs = table(rising)
    for r in runs:
        unfinished = r["n_train"] == where
        r["converged"], r["state"] = not unfinished, state if unfinished else "converged"
    _, row = verdicts(runs)
    assert row["data_trend"]["verdict"] == verdict and row["data_trend"]["measured"] == "holds"
    assert row["data_trend"]["length_robust"] == (verdict == "holds")
