"""One honest fine-tuning run on the tiny checkpoint: files, records, reproducibility, bad input."""

import json
import subprocess
import sys

import pytest

from vlpeft.errors import UserError
from vlpeft.recipes.finetune import FinetuneConfig, evaluate_run, finetune, train_steps

FAST = dict(length_policy="steps", steps=6, batch_size=16, val_limit=20, test_limit=30, evals=2)


def run(ckpt, out, task="easyvqa-vqa", method="lora", **kw):
    cfg = FinetuneConfig(model=str(ckpt), task=task, method=method, **{**FAST, **kw})
    return finetune(cfg, out, progress=False)


@pytest.mark.parametrize("task", ["scenes-caption", "scenes-vqa", "easyvqa-caption", "easyvqa-vqa"])
def test_each_builtin_task_runs_end_to_end_and_reevaluates_exactly(task, tiny_checkpoint, tmp_path):
    ckpt, _ = tiny_checkpoint
    m = run(ckpt, tmp_path / "run", task=task, data_size=0.05)
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert files == ["curve.json", "metrics.json", "peft_config.json", "peft_model.safetensors"]
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("task", "method", "knob", "knob_value", "data_size", "data_fraction", "seed", "metric", "test_score",
                "best_val_score", "secondary", "trainable_params", "params", "total_params", "train_seconds",
                "examples_per_second", "peak_memory_mb", "environment", "status", "length_policy"):
        assert key in on_disk, key
    assert on_disk["metric"] == ("cider_d" if task.endswith("caption") else "vqa_accuracy")
    assert on_disk["params"]["trainable_per_part"]["vision"] == 0  # default placement: text towers only
    if task.endswith("caption"):  # a captioning run never touches the text encoder
        assert on_disk["params"]["trainable_per_part"]["text_encoder"] == 0
    curve = json.loads((tmp_path / "run" / "curve.json").read_text())
    assert [row["step"] for row in curve] == [3, 6]
    again = evaluate_run(str(ckpt), tmp_path / "run", task)
    assert again["test_score"] == m["test_score"]


def test_same_seed_same_scores_and_data_size_is_counted(tiny_checkpoint, tmp_path):
    ckpt, _ = tiny_checkpoint
    a = run(ckpt, tmp_path / "a", data_size=40, seed=3)
    b = run(ckpt, tmp_path / "b", data_size=40, seed=3)
    assert a["test_score"] == b["test_score"] and a["best_val_score"] == b["best_val_score"]
    assert json.loads((tmp_path / "a" / "curve.json").read_text())[-1]["loss"] == \
        json.loads((tmp_path / "b" / "curve.json").read_text())[-1]["loss"]
    assert a["data_size"] == 40 and a["data_fraction"] == pytest.approx(40 / a["train_pool"])


def test_bf16_autocast_trains_close_to_fp32(tiny_checkpoint, tmp_path):
    ckpt, _ = tiny_checkpoint
    run(ckpt, tmp_path / "fp32", data_size=40, seed=3)
    bf16 = run(ckpt, tmp_path / "bf16", data_size=40, seed=3, precision="bf16")
    assert bf16["config"]["precision"] == "bf16" and 0 <= bf16["test_score"] <= 100
    # Not bit-equal (matmuls round to 8 mantissa bits), but the same training to within rounding.
    loss = {p: json.loads((tmp_path / p / "curve.json").read_text())[0]["loss"] for p in ("fp32", "bf16")}
    assert loss["bf16"] != loss["fp32"] and loss["bf16"] == pytest.approx(loss["fp32"], rel=0.02)
    with pytest.raises(UserError, match="precision 'fp16'"):
        FinetuneConfig(model=str(ckpt), task="scenes-caption", method="lora", precision="fp16")


def test_frozen_trains_nothing_and_budget_target_resolves(tiny_checkpoint, tmp_path):
    ckpt, _ = tiny_checkpoint
    frozen = run(ckpt, None, method="frozen", data_size=0.01)
    assert frozen["trainable_params"] == 0 and frozen["steps"] == 0
    lora = run(ckpt, None, method="lora", budget="params=25k", data_size=0.01)
    assert lora["budget_target"] == 25000 and lora["knob"] == "rank"
    assert abs(lora["budget_params"] - 25000) < 0.5 * 25000


def test_training_length_policies():
    cfg = lambda **kw: FinetuneConfig(model="m", task="easyvqa-vqa", method="lora", batch_size=10, **kw)
    assert train_steps(cfg(length_policy="epochs", epochs=3), 95) == 30
    assert train_steps(cfg(length_policy="steps", steps=7), 95) == 7
    assert train_steps(cfg(length_policy="epochs_min_steps", epochs=3, min_steps=50), 95) == 50
    assert train_steps(cfg(length_policy="epochs_min_steps", epochs=3, min_steps=5), 95) == 30


def cli(*args):
    return subprocess.run([sys.executable, "-m", "vlpeft.cli", *map(str, args)], capture_output=True, text=True)


@pytest.mark.parametrize("extra,needle", [
    (["--task", "easyvqa-vqaa", "--method", "lora"], 'did you mean "easyvqa-vqa"'),
    (["--task", "easyvqa-vqa", "--method", "lora", "--data-size", "0"], "data_size"),
    (["--task", "easyvqa-vqa", "--method", "lora", "--data-size", "999999"], "data_size"),
    (["--task", "easyvqa-vqa", "--method", "lora", "--data-size", "1.5"], "data_size"),
    (["--task", "easyvqa-vqa", "--method", "lorra"], 'did you mean "lora"'),
    (["--task", "easyvqa-vqa", "--method", "lora", "--budget", "0"], "positive"),
    (["--task", "easyvqa-vqa", "--method", "lora", "--budget", "params=5"], "no rank reaches"),
    (["--task", "easyvqa-vqa", "--method", "full", "--budget", "4"], "no size knob"),
    (["--task", "easyvqa-vqa", "--method", "lora", "--options", "{bad json"], "--options"),
    (["--task", "coco-caption", "--method", "lora"], "karpathy_json"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(extra, needle, tiny_checkpoint, tmp_path):
    ckpt, _ = tiny_checkpoint
    r = cli("finetune", "--model", ckpt, "--out", tmp_path / "run", "--steps", "2", "--length-policy", "steps", *extra)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()


def test_peak_memory_is_measured_per_run():
    import torch

    from vlpeft.recipes.finetune import peak_memory_mb, reset_peak_memory

    cpu = torch.device("cpu")
    big = torch.ones(64 * 2**20)  # 256 MiB
    before = peak_memory_mb(cpu)
    del big
    reset_peak_memory(cpu)  # a new window: the earlier peak no longer counts
    assert 0 < peak_memory_mb(cpu) < before - 128
