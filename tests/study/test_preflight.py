"""Advice for a new task before any grid: measured on a real (tiny) checkpoint, predicted from study
stores, with the paper's rule when no comparable study is given; the CLI end to end."""

import subprocess
import sys

import pytest
import yaml

from fixtures_data import write_user_task
from fixtures_study import fake_store
from vlpeft.model.checkpoint import checkpoint_digest
from vlpeft.study import preflight
from vlpeft.study.spec import expand, parse_spec


@pytest.fixture(scope="module")
def assessed(tiny_checkpoint):
    ckpt, _ = tiny_checkpoint
    return preflight.assess(str(ckpt), "scenes-caption", zero_shot_examples=16, n=32)


def test_assess_measures_consistency_and_zero_shot(assessed, tiny_checkpoint):
    a = assessed
    assert a["task"] == "scenes-caption" and a["relation"].startswith("same data, same task")
    assert 0 < a["lm_loss"] < 20 and 0 <= a["feature_distance"] < 2 and a["measured_on"] == 32
    assert a["metric"] == "cider_d" and a["zero_shot"] >= 0 and a["zero_shot_on"] == 16
    assert a["pool"] == 4000 and a["digest"] == checkpoint_digest(tiny_checkpoint[0])
    assert set(a["seconds"]) == {"measures", "zero_shot"}


def test_advice_predicted_from_studies_of_the_same_checkpoint(assessed, tmp_path):
    folder = fake_store(tmp_path / "study", digest=assessed["digest"])
    out = preflight.advise_task(assessed, [str(folder)], data_size="10%")
    assert out["basis"] == "prediction" and out["data_size"] == 400 and out["excluded"] == []
    data = out["prediction"]["data_sensitivity"]
    assert data["n"] == 4 and data["lo"] < data["value"] < data["hi"]
    assert out["expected"] in ("likely consistent", "likely inconsistent", "uncertain")
    assert out["recommended"]["label"] == "lora" and out["nearest"]["task"] in ("cap-a", "cap-b", "vqa-a", "vqa-b")
    spec = parse_spec(out["confirm"], "confirm")  # the confirming grid is a study spec that runs as it is
    assert spec.tasks == ("scenes-caption",) and spec.data_sizes == (40, 126, 400)
    assert set(spec.methods) == {"lora", "frozen"} and out["confirm"]["methods"]["lora"]["budgets"] == [1, 4, 16]
    assert len(expand(spec)) == (3 + 1) * 3 * 2
    text = preflight.advice_text(out)
    assert "90% prediction interval" in text and "recommended for 400 examples: lora" in text
    yaml.safe_load("\n".join(line[4:] for line in text.splitlines() if line.startswith("    ")))


def test_advice_falls_back_to_the_paper_rule_for_another_checkpoint(assessed, tmp_path):
    folder = fake_store(tmp_path / "other", digest="not-this-one")
    out = preflight.advise_task(assessed, [str(folder)])
    assert out["basis"] == "rule" and out["excluded"] == ["other"] and out["prediction"] is None
    assert out["expected"] == "likely consistent"  # scenes-caption: same data, same task
    assert out["data_size"] == 4000 and set(out["confirm"]["methods"]) == {"prompt", "prefix", "adapter", "lora",
                                                                           "mam", "frozen"}
    text = preflight.advice_text(out)
    assert "it is a rule, not a prediction" in text and "another checkpoint" in text


def test_cli_advise_before_a_grid_on_a_task_file_of_ones_own_data(tiny_checkpoint, tmp_path):
    ckpt, _ = tiny_checkpoint
    task = write_user_task(tmp_path, "jsonl", "vqa")
    folder = fake_store(tmp_path / "study", digest=checkpoint_digest(ckpt))
    cmd = [sys.executable, "-m", "vlpeft.cli", "advise", "--model", str(ckpt), "--task", str(task),
           "--from", str(folder), "--threads", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for part in ("consistency with pre-training: lm_loss", "zero-shot vqa_accuracy", "predicted from 4 study task",
                 "gain per tenfold data", "expected: ", "recommended for", "the smallest grid that would confirm"):
        assert part in r.stdout, (part, r.stdout)
    bad = subprocess.run(cmd[:-4] + ["--from", str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert bad.returncode == 2 and "not a study folder" in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_the_dry_run_warns_when_a_validation_split_cannot_tell_delta_from_noise(tiny_checkpoint):
    ckpt, _ = tiny_checkpoint

    def spec(val_limit):
        return parse_spec({"name": "n", "model": str(ckpt), "tasks": ["easyvqa-vqa"], "methods": {"lora": {}},
                           "data_sizes": [16], "training": {"val_limit": val_limit}})

    (small,) = preflight.validation_noise(spec(20))
    # VQA accuracy is in [0, 100]: its standard error on 20 questions is at most 50 / sqrt(20) = 11.2 points,
    # over half of δ = 5 (5 % of 100)
    assert small["n_val"] == 20 and small["too_small"] and small["se"] == pytest.approx(50 / 20 ** 0.5)
    assert small["needed"] in (400, 401)  # (2 x 50 / 5) ** 2 = 400, whatever n: the bound needs 400 questions
    assert "warning: too small to tell δ from noise" in preflight.noise_text(small)
    (large,) = preflight.validation_noise(spec(0))  # the whole split
    assert large["n_val"] >= 400 and not large["too_small"]
    # the report's δ is 5 % of the best score p: 2 sqrt(p (1 - p) / n) <= 0.05 p needs p >= 4 / (4 + 0.0025 n)
    n = large["n_val"]
    assert large["score_needed"] == pytest.approx(100 * 4 / (4 + 0.0025 * n))
    p = large["score_needed"] / 100
    assert 2 * (p * (1 - p) / n) ** 0.5 == pytest.approx(0.05 * p)  # exactly at the edge
    assert f"only if the best score reaches {large['score_needed']:.3g}" in preflight.noise_text(large)


def test_the_dry_run_measures_caption_noise_on_the_frozen_checkpoint(tiny_checkpoint):
    ckpt, _ = tiny_checkpoint
    spec = parse_spec({"name": "n", "model": str(ckpt), "tasks": ["scenes-caption"], "methods": {"lora": {}},
                       "data_sizes": [16], "training": {"val_limit": 400}})
    (r,) = preflight.validation_noise(spec)
    assert r["probe"] == 200 and r["n_val"] == 400 and r["score"] is not None and r["se"] > 0
    assert r["delta"] == pytest.approx(0.05 * r["score"]) and "measured on 200 and scaled" in r["basis"]
    assert r["basis"].startswith("the frozen model's")  # its noise, larger than the references' agreement


def test_the_dry_run_sizes_delta_from_held_out_references_where_the_frozen_model_cannot_caption(tiny_checkpoint):
    # easy-VQA's images are new to the checkpoint: its frozen CIDEr-D is near 0, and 5 % of it would ask for
    # thousands of validation images; a caption held out of each image's references scores what a run can reach
    ckpt, _ = tiny_checkpoint
    spec = parse_spec({"name": "n", "model": str(ckpt), "tasks": ["easyvqa-caption"], "methods": {"lora": {}},
                       "data_sizes": [16], "training": {"val_limit": 200}})
    (r,) = preflight.validation_noise(spec)
    frozen = 0.05 * r["score"]
    assert r["scale"] == "a held-out reference's score" and "held-out references' (a lower bound)" in r["basis"]
    assert r["score"] > 1.0 and r["delta"] == pytest.approx(frozen) and not r["too_small"], r
