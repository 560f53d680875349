"""TensorBoard logging of a fine-tuning run (`log: tensorboard`): what the events hold, read back with
TensorBoard's own reader; the one-line refusal without the package; writers closed on failure."""

import dataclasses
import importlib.util
import json
import subprocess
import sys
import threading

import pytest

from vlpeft.errors import UserError
from vlpeft.recipes.finetune import FinetuneConfig, finetune

needs_tensorboard = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                                       reason="the tensorboard package (the dev extra) is not installed")
FAST = dict(length_policy="steps", steps=6, batch_size=16, val_limit=20, test_limit=30, evals=2)


def events(folder):
    """{scalar tag: [(step, value)]}, {text tag: its last text}, read by TensorBoard's own reader."""
    reader = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = reader.EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    texts = {tag: acc.Tensors(tag)[-1].tensor_proto.string_val[0].decode() for tag in acc.Tags()["tensors"]}
    return scalars, texts


@needs_tensorboard
def test_a_run_logs_loss_lr_the_validation_curve_and_its_convergence(tiny_checkpoint, tmp_path):
    ckpt, _ = tiny_checkpoint
    cfg = FinetuneConfig(model=str(ckpt), task="scenes-caption", method="lora", data_size=64, log="tensorboard",
                         **FAST)
    m = finetune(cfg, tmp_path / "run", progress=False)
    assert len(list((tmp_path / "run").glob("events.out.tfevents.*"))) == 1  # in the run folder itself
    scalars, texts = events(tmp_path / "run")
    curve = json.loads((tmp_path / "run" / "curve.json").read_text())
    # the validation curve, step 0 included: curve.json's values (events hold float32)
    assert [s for s, _ in scalars["val/cider_d"]] == [row["step"] for row in curve] == [0, 3, 6]
    assert [v for _, v in scalars["val/cider_d"]] == pytest.approx([row["val_score"] for row in curve], rel=1e-6)
    assert [v for _, v in scalars["val/cider_d_se"]] == pytest.approx([row["val_se"] for row in curve], rel=1e-6)
    # every step's loss and learning rate; their mean over an evaluation's window is curve.json's loss
    assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3, 4, 5, 6] == [s for s, _ in scalars["train/lr"]]
    losses = [v for _, v in scalars["train/loss"]]
    assert sum(losses[:3]) / 3 == pytest.approx(curve[1]["loss"], rel=1e-6)
    assert sum(losses[3:]) / 3 == pytest.approx(curve[2]["loss"], rel=1e-6)
    assert scalars["train/lr"][2][1] == pytest.approx(curve[1]["lr"], rel=1e-6)
    # the end: convergence and test score, as numbers and in words
    assert scalars["result/test_cider_d"] == [(6, pytest.approx(m["test_score"], rel=1e-6))]
    assert scalars["result/converged"] == [(6, float(m["converged"]))] and m["converged"] is False
    assert scalars["result/steps_to_best"] == [(6, m["steps_to_best"])]
    result = texts["result/text_summary"]
    for key, value in (("converged", "False"), ("state", "too_short"), ("stopped_by", "length"),
                       ("steps_to_best", str(m["steps_to_best"]))):
        assert f"| {key} | {value} |" in result
    assert f"| test cider_d | {m['test_score']} |" in result
    assert '"log": "tensorboard"' in texts["config/text_summary"]


@needs_tensorboard
def test_a_new_run_replaces_the_events_of_the_one_before(tiny_checkpoint, tmp_path):
    ckpt, _ = tiny_checkpoint
    cfg = FinetuneConfig(model=str(ckpt), task="easyvqa-vqa", method="lora", data_size=32, log="tensorboard", **FAST)
    finetune(cfg, tmp_path / "run", progress=False)
    first = set((tmp_path / "run").glob("events.out.tfevents.*"))
    finetune(dataclasses.replace(cfg, steps=4), tmp_path / "run", progress=False)
    second = set((tmp_path / "run").glob("events.out.tfevents.*"))
    assert len(second) == 1 and not first & second
    scalars, _ = events(tmp_path / "run")
    assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3, 4]  # one run, not two overlaid
    finetune(dataclasses.replace(cfg, log="none"), tmp_path / "run", progress=False)
    assert not list((tmp_path / "run").glob("events.out.tfevents.*"))  # no stale events beside a new record


@needs_tensorboard
def test_a_failing_run_closes_its_writer_and_progress_thread_and_keeps_its_events(tiny_checkpoint, tmp_path,
                                                                                   monkeypatch, capsys):
    import vlpeft.recipes.finetune as recipe
    from vlpeft.recipes import progress

    ckpt, _ = tiny_checkpoint
    monkeypatch.setattr(progress, "is_terminal", lambda stream: False)  # a log: the progress thread runs
    real, calls = recipe.train_step, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(recipe, "train_step", failing)
    before = set(threading.enumerate())
    cfg = FinetuneConfig(model=str(ckpt), task="easyvqa-vqa", method="lora", data_size=32, log="tensorboard", **FAST)
    with pytest.raises(RuntimeError, match="boom"):
        finetune(cfg, tmp_path / "run", progress=True)
    assert set(threading.enumerate()) <= before  # no writer thread, no progress thread left
    scalars, _ = events(tmp_path / "run")
    assert [s for s, _ in scalars["train/loss"]] == [1, 2] and [s for s, _ in scalars["val/vqa_accuracy"]] == [0]


def test_without_the_tensorboard_package_asking_for_it_is_one_line_before_any_work(tiny_checkpoint, tmp_path,
                                                                                    monkeypatch):
    ckpt, _ = tiny_checkpoint
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` fails as if not installed
    cfg = FinetuneConfig(model=str(ckpt), task="easyvqa-vqa", method="lora", log="tensorboard", **FAST)
    with pytest.raises(UserError) as e:
        finetune(cfg, tmp_path / "run", progress=False)
    assert "\n" not in str(e.value) and "pip install 'vlpeft[tensorboard]'" in str(e.value)
    assert not (tmp_path / "run").exists()
    # the command: one line on stderr, exit code 2
    code = ("import sys; sys.modules['tensorboard'] = None; from vlpeft.cli import main; sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, "finetune", "--model", str(ckpt), "--task", "easyvqa-vqa",
                        "--method", "lora", "--out", str(tmp_path / "cli"), "--log", "tensorboard"],
                       capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("vlpeft: error: ")
    assert "pip install 'vlpeft[tensorboard]'" in r.stderr
    assert not (tmp_path / "cli").exists()


def test_log_takes_none_or_tensorboard():
    with pytest.raises(UserError, match="log"):
        FinetuneConfig(model="tiny", task="easyvqa-vqa", method="lora", log="wandb")
    assert FinetuneConfig(model="tiny", task="easyvqa-vqa", method="lora").log == "none"
