"""The report and the advice, from a study store alone; the HTML checked in headless Chromium."""

import hashlib
import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vlpeft import store
from vlpeft.analysis import report
from vlpeft.analysis.advise import advise
from vlpeft.analysis.results import aggregate, load_runs
from vlpeft.errors import UserError
from vlpeft.study.spec import Cell

METHODS = {"lora": ("rank", {2: 12_000, 8: 48_000}), "adapter": ("bottleneck", {4: 14_000, 16: 51_000}),
           "full": (None, {None: 2_500_000}), "frozen": (None, {None: 0})}


def fake_study(folder: Path, seed=0, converged=lambda task, label, n, s: True):
    """A results.sqlite as a study writes it: two tasks, four methods, three sizes, three seeds;
    `converged(task, label, n, seed)` says which runs had converged."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    con = store.connect(folder / "results.sqlite")
    store.set_meta(
        con,
        {
            "name": "fake",
            "identity": json.dumps({"model": "none", "training": {"length_policy": "steps"}}),
            "consistency": json.dumps(
                {
                    "scenes-caption": {"lm_loss": 1.1, "feature_distance": 0.0},
                    "easyvqa-vqa": {"lm_loss": 4.0, "feature_distance": 0.9},
                }
            ),
        },
    )
    for task, base, metric, relation in (("scenes-caption", 2.5, "cider_d", "same data, same task"),
                                         ("easyvqa-vqa", 40.0, "vqa_accuracy", "new data, new task")):
        for label, (knob, budgets) in METHODS.items():
            for budget, params in budgets.items():
                for n in (100, 400, 1600):
                    for s in range(3):
                        gain = (
                            0
                            if label == "frozen"
                            else (0.1 if task == "scenes-caption" else 5.0)
                            * np.log10(n)
                            * (1 + np.log10(1 + params) / 10)
                        )
                        y = base + gain + rng.normal(0, 0.05 * base / 10)
                        cell = Cell(
                            id=f"{task}.{label}.{'b' + str(budget) + '.' if budget else ''}n{n}.s{s}",
                            task=task,
                            label=label,
                            method=label,
                            budget=None if budget is None else str(budget),
                            data_size=n,
                            seed=s,
                            lr=None,
                        )
                        store.add_cells(con, [(cell, {"task": task})])
                        metrics = {
                            "status": "done",
                            "task": task,
                            "method": label,
                            "knob": knob,
                            "knob_value": budget,
                            "data_size": n,
                            "data_fraction": n / 4000,
                            "seed": s,
                            "metric": metric,
                            "test_score": y,
                            "best_val_score": y + rng.normal(0, 0.01),
                            "budget_params": params,
                            "trainable_params": params,
                            "params": {"backbone": 2_556_000, "budget_percent_of_backbone": 100 * params / 2_556_000},
                            "lr": 1e-3,
                            "task_relation": relation,
                            "length_policy": "steps",
                            "train_seconds": 1.0,
                            "secondary": {},
                            "environment": {"host": "h", "versions": {"torch": "x"}},
                            "converged": converged(task, label, n, s),
                            "convergence": {"state": "converged" if converged(task, label, n, s)
                                            else "still_improving"},
                            "steps_to_best": 200, "steps_done": 400, "best_val_se": 0.01, "n_val": 300,
                            "stopped_by": "converged" if converged(task, label, n, s) else "cap",
                        }
                        store.mark_running(con, cell.id)
                        store.finish(con, cell.id, {"status": "done", "metrics": metrics, "started": 1.0, "ended": 2.0})
    con.close()
    return folder


def digests(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_report_from_the_store_alone_and_a_rebuild_changes_nothing(tmp_path):
    folder = fake_study(tmp_path / "s")
    out = report.build(folder)
    md = (folder / "report.md").read_text()
    order = ["## What this study found", "## Compared with Tian et al.", "## Embedding composition vs layer",
             "## Verdict matrix", "## Statistics behind each verdict", "## Setup", "## Figures", "## Advice",
             "## Did the runs learn?", "## Did the runs converge?", "## Can the validation set tell δ from noise?",
             "## Consistency with pre-training", "## Every cell", "## Every run"]
    assert [md.index(s) for s in order] == sorted(md.index(s) for s in order)
    # the planted data-size trend on the new task: a sentence, a symbol, and the statistics behind it
    assert "On easyvqa-vqa (new data, new task): performance rose with data size for 2 of 2 methods (adapter, lora)." \
        in md
    assert "| easyvqa-vqa | lora | ✓ | ✓ | ✗ | – |" in md and "| easyvqa-vqa | lora | holds (ρ=" in md
    # the planted trends rise on both tasks: as the paper expects on the new task, not on the consistent one
    assert "| easyvqa-vqa | new data, new task | performance rises with data size and with trainable parameters |" in md
    assert md.split("| easyvqa-vqa | new data, new task |")[1].split("\n")[0].endswith("| agrees |")
    assert md.split("| scenes-caption | same data, same task |")[1].split("\n")[0].endswith("| differs |")
    assert "lora: 2, 8; adapter: 4, 16" in md  # budgets in numeric order
    html = (folder / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 9
    assert not any(s in html for s in ("src='http", 'src="http', "<link"))  # self-contained
    figures = sorted(p.name for p in (folder / "figures").iterdir())
    assert "easyvqa-vqa-pareto.svg" in figures and "consistency.png" in figures
    before = digests(folder)
    report.build(folder)
    assert digests(folder) == before
    assert {v["label"] for v in out["verdicts"]} == {"lora", "adapter", "full"}


@pytest.mark.slow
def test_claims_csv_is_the_verdict_matrix_row_for_row(tmp_path):
    import csv

    folder = fake_study(tmp_path / "s")
    out = report.build(folder)
    rows = list(csv.DictReader((folder / "claims.csv").open()))
    assert list(rows[0]) == list(report.claims_mod.TABLE_COLUMNS)
    assert len(rows) == 4 * len(out["verdicts"])  # one per task x label x claim
    md = (folder / "report.md").read_text()
    matrix = md.split("## Verdict matrix")[1].split("\n\n")[1].splitlines()[2:]
    symbols = {v: k for k, v in report.findings.SYMBOLS.items()}
    for line in matrix:
        task, label, *cells = [c.strip() for c in line.strip("|").split("|")]
        mine = {r["claim"]: r for r in rows if r["task"] == task and r["label"] == label}
        assert [symbols[c.split()[0]] for c in cells] == [mine[c]["verdict"] for c in report.claims_mod.CLAIMS]
    import pandas as pd

    frame = pd.read_parquet(folder / "claims.parquet")
    assert len(frame) == len(rows) and frame["p"].dtype == float and frame["cells_not_converged"].dtype == "int64"


@pytest.mark.slow
def test_a_study_whose_runs_were_still_improving_says_so_everywhere(tmp_path):
    import csv

    # every lora run on easyvqa-vqa at the smallest size stopped while still improving
    folder = fake_study(tmp_path / "s", converged=lambda task, label, n, s: not (
        task == "easyvqa-vqa" and label == "lora" and n == 100))
    report.build(folder)
    md = (folder / "report.md").read_text()
    assert "| easyvqa-vqa | lora | ⌛ | ⌛ | ⌛ | – |" in md
    assert "performance rose with data size for 1 of 2 methods (adapter); 1 confounded by training length (lora)" in md
    conv = md.split("## Did the runs converge?")[1].split("\n## ")[0]
    assert "| easyvqa-vqa | lora | 12 of 18 | 6 | 0 | 0 | 6 | 200 | 400 |" in conv
    rows = {(r["task"], r["label"], r["claim"]): r for r in csv.DictReader((folder / "claims.csv").open())}
    flat = rows["easyvqa-vqa", "lora", "data_flat"]
    assert (flat["verdict"], flat["measured"], flat["cells_not_converged"]) == ("confounded", "does not hold", "2")
    assert rows["easyvqa-vqa", "adapter", "data_trend"]["verdict"] == "holds"
    cells = aggregate(load_runs(folder))
    a = advise(cells, "easyvqa-vqa", 100)  # the lora cells at 100 examples are left out of the advice
    assert a["dropped"] == 2 and a["recommended"]["label"] != "lora"


@pytest.mark.slow
def test_runs_still_improving_where_more_training_only_strengthens_a_verdict_leave_it_standing(tmp_path):
    import csv

    # still improving at the largest size: the rise with data can only grow; a rise with parameters cannot
    # be told (both budgets are unfinished there, and either could rise more)
    folder = fake_study(tmp_path / "s", converged=lambda task, label, n, s: not (
        task == "easyvqa-vqa" and label == "lora" and n == 1600))
    report.build(folder)
    rows = {(r["task"], r["label"], r["claim"]): r for r in csv.DictReader((folder / "claims.csv").open())}
    trend, flat = rows["easyvqa-vqa", "lora", "data_trend"], rows["easyvqa-vqa", "lora", "data_flat"]
    assert (trend["verdict"], trend["cells_not_converged"], trend["length_robust"]) == ("holds", "2", "True")
    assert (flat["verdict"], flat["length_robust"]) == ("does not hold", "True")
    assert rows["easyvqa-vqa", "lora", "param_trend"]["verdict"] == "confounded"
    assert "| easyvqa-vqa | lora | ✓ | ⌛ | ✗ | – |" in (folder / "report.md").read_text()


def test_advice_ranks_on_validation_and_respects_the_parameter_cap(tmp_path):
    cells = aggregate(load_runs(fake_study(tmp_path / "s")))
    a = advise(cells, "easyvqa-vqa", 1500)
    assert a["study_size"] == 1600 and a["recommended"]["label"] == "full" and a["runner_up"] is not None
    capped = advise(cells, "easyvqa-vqa", 1500, max_params=20_000)
    assert capped["recommended"]["params"] <= 20_000
    lo, hi = capped["recommended"]["ci"]
    assert lo <= capped["recommended"]["expected"] <= hi
    with pytest.raises(UserError, match=r"no finished runs of task 'easyvqa-vq' \(did you mean \"easyvqa-vqa\"\?\)"):
        advise(cells, "easyvqa-vq", 100)
    with pytest.raises(UserError, match="no method of the study fits --max-params 5"):
        advise(cells, "easyvqa-vqa", 100, max_params=5)


@pytest.mark.slow
def test_cli_report_and_advise(tmp_path):
    folder = fake_study(tmp_path / "s")
    r = subprocess.run([sys.executable, "-m", "vlpeft.cli", "advise", str(folder), "--task", "scenes-caption",
                        "--data-size", "400", "--max-params", "20000"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "recommended:" in r.stdout and "runner-up:" in r.stdout and "95% CI" in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "vlpeft.cli", "report", str(tmp_path / "nothing")], capture_output=True, text=True
    )
    assert r.returncode == 2 and "no results.sqlite here" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "vlpeft.cli", "report", str(folder), "--delta", "5"], capture_output=True, text=True
    )
    assert r.returncode == 2 and "--delta 5.0: must be a fraction" in r.stderr


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _chromium(), reason="Debian's chromium is not installed (scripts/setup installs it)")
def test_report_html_renders_in_headless_chromium_without_errors(tmp_path):
    folder = fake_study(tmp_path / "s")
    report.build(folder)
    page = (folder / "report.html").resolve().as_uri()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run([_chromium(), *flags, "--enable-logging=stderr", "--v=0", "--dump-dom", page],
                         capture_output=True, text=True, timeout=120)
    assert 'data-images="9/9"' in dom.stdout, dom.stderr[-2000:]
    page_text = dom.stdout
    assert page_text.index("What this study found") < page_text.index("<table")  # findings first, in words
    cells = re.findall(r"<td[^>]*>(.*?)</td>", page_text, re.S)
    assert len(cells) > 100 and not [c for c in cells if _json_object(html.unescape(c))]
    assert page_text.count("class=\"v-holds\"") >= 6  # the verdict matrix's coloured cells
    assert 'data-errors="0"' in dom.stdout
    assert "Uncaught" not in dom.stderr
    shot = tmp_path / "report.png"
    subprocess.run([_chromium(), *flags, f"--screenshot={shot}", "--window-size=1400,2000", page],
                   capture_output=True, text=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000
    shutil.copy(shot, folder / "report-screenshot.png")


def test_a_study_with_no_finished_run_reports_its_grid_and_no_nulls(tmp_path, capsys):
    from vlpeft.cli import main

    folder = tmp_path / "s"
    folder.mkdir()
    con = store.connect(folder / "results.sqlite")
    store.set_meta(
        con,
        {
            "name": "unfinished",
            "identity": json.dumps({"model": "none", "training": {"length_policy": "steps", "steps": 40}}),
        },
    )
    cells = [Cell(id=f"easyvqa-vqa.lora.b{b}.n16.s{s}", task="easyvqa-vqa", label="lora", method="lora", budget=str(b),
                  data_size=16, seed=s, lr=None) for b in (1, 2) for s in (0, 1)]
    store.add_cells(con, [(c, {"task": c.task, "length_policy": "steps"}) for c in cells])
    store.mark_running(con, cells[0].id)
    store.mark_running(con, cells[1].id)  # two interrupted, two pending
    con.close()
    assert main(["report", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "4 runs (2 pending, 2 running); 0 cells with finished runs" in out
    md = (folder / "report.md").read_text()
    setup = md.split("## Setup")[1].split("\n## ")[0]
    assert "None" not in md and "null" not in md and "No PEFT method has finished runs yet" in md
    assert "| runs | 0 done of 4: 2 pending, 2 running |" in setup and "easyvqa-vqa" in setup and "lora: 1, 2" in setup
    assert "| training length | steps: equal optimiser steps (compute-matched): 40 steps at every data size |" \
        in setup and "no finished run yet" in setup


def test_advice_takes_fractions_says_what_it_ranks_on_and_refuses_far_extrapolation(tmp_path):
    from vlpeft.analysis.advise import advice_text

    cells = aggregate(load_runs(fake_study(tmp_path / "s")))
    assert advise(cells, "easyvqa-vqa", "10%")["asked_size"] == 400  # of the 4,000-example pool
    assert advise(cells, "easyvqa-vqa", 0.04)["asked_size"] == 160
    text = advice_text(advise(cells, "easyvqa-vqa", 1600))
    assert "ranked by mean validation score" in text and "validation " in text.splitlines()[1]
    far = advise(cells, "easyvqa-vqa", 5000)  # 3.1x the largest size: answered, flagged
    assert far["extrapolation"] == pytest.approx(
        5000 / 1600
    ) and "warning: 5,000 examples is 3.1x outside" in advice_text(far)
    with pytest.raises(
        UserError, match=r"--data-size 10,000,000 is 6,250x outside the sizes this study ran on easyvqa-vqa"
    ):
        advise(cells, "easyvqa-vqa", 10_000_000)
    with pytest.raises(UserError, match=r"--data-size must be a positive number of examples, got 0"):
        advise(cells, "easyvqa-vqa", 0)


def test_the_setup_names_what_a_method_label_sets_beyond_its_budgets():
    spec = {"methods": {"lora": {"lr": [], "training": {}, "task_training": {}},
                        "adapter": {"lr": [0.01], "training": {"evals": 3}, "task_training": {}},
                        "prefix": {"lr": [], "training": {}, "task_training": {"easyvqa-vqa": {"steps": 600}}}}}
    assert report._method_settings(spec) == ["adapter: lr 0.01, evals 3", "prefix: on easyvqa-vqa steps 600"]
    assert report._method_settings({}) == []


def test_the_setup_says_how_each_kind_predicts():
    assert report.inference_text("caption", {"num_beams": 3, "prompt": ""}) == "beam search (3 beams)"
    assert report.inference_text("caption", {"num_beams": 1, "prompt": "a photo of"}) == \
        'greedy decoding after the prompt "a photo of"'
    assert report.inference_text("vqa", {"inference": "generate", "rank_k": 128}) == \
        "greedy generation of a free answer"
    assert "the 16 with the likeliest first token" in report.inference_text("vqa", {"inference": "rank", "rank_k": 16})


def test_the_did_it_learn_reading_tells_undertrained_from_a_baseline_near_the_best():
    assert report.learn_reading({"flagged": [], "headroom": 30, "margin": 3}) == "learned"
    assert report.learn_reading({"flagged": [{}], "headroom": 29.2, "margin": 3.5}) == "undertrained"
    assert report.learn_reading({"flagged": [{}], "headroom": 0.48, "margin": 0.26}) == "baseline near the best"
    assert report._seconds(1440.3) == "1,440 s (24 min)" and report._seconds(None) == "–"


def test_a_name_holding_a_bar_or_a_line_break_stays_in_its_markdown_cell():
    from vlpeft.analysis.report import _table

    rows = _table(["label", "score"], [["lora|wide\nrank 8", "71.5"]])
    assert rows[2] == "| lora\\|wide rank 8 | 71.5 |"
    assert all(r.count("|") - r.count("\\|") == 3 for r in rows)  # two columns in every row


@pytest.mark.slow
def test_the_setup_shows_the_pre_training_record_kept_in_the_store_not_the_checkpoint_folder(tmp_path):
    folder = fake_study(tmp_path / "s")  # its model, "none", is no folder at all
    assert report.build(folder)["setup"]["pretrain"] is None  # a store from before the record: as if none
    assert "| pre-training | – |" in (folder / "report.md").read_text()
    con = store.connect(folder / "results.sqlite")
    store.write_meta(con, pretrain={"steps": 1740, "seed": 0, "objectives": ["itc", "itm", "lm"],
                                    "train_seconds": 547.0, "config": {"scenes": 4096}, "data": {}, "other": 1})
    con.close()
    setup = report.build(folder)["setup"]
    assert setup["pretrain"] == {"steps": 1740, "seed": 0, "objectives": ["itc", "itm", "lm"], "train_seconds": 547.0,
                                 "config": {"scenes": 4096}, "data": {}}
    assert "| pre-training | 1,740 steps in 547 s (9 min), seed 0; objectives itc, itm, lm |" in \
        (folder / "report.md").read_text()


def test_table_numbers_keep_three_digits_and_never_an_exponent():
    assert [report._fmt(v) for v in (1187.5, 4000.0, 12345, 3.14159, 0.000123, 16, None, float("nan"))] == [
        "1,188", "4,000", "12,345", "3.14", "0.000123", "16", "–", "–"]
