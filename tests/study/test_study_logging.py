"""A study's logs: `training: {log: tensorboard}` gives one TensorBoard log folder with one run per cell,
named by the cell id; without the package the study stops in its validation pass; plain progress lines
(runs done, rate, ETA) between finished runs when stdout is not a terminal."""

import importlib.util
import json
import re
import sys
import threading
import time

import pytest
import yaml

from vlpeft.errors import UserError
from vlpeft.recipes import progress
from vlpeft.study import dry_run, load_spec, run_study
from vlpeft.study.runner import Progress

TRAINING = {"length_policy": "steps", "steps": 4, "batch_size": 8, "evals": 1, "val_limit": 8, "test_limit": 16,
            "log": "tensorboard"}


def write_spec(tmp_path, ckpt):
    d = {"name": "logged", "model": str(ckpt), "tasks": ["scenes-caption"],
         "methods": {"lora": {"budgets": [1]}, "frozen": {}}, "data_sizes": [16], "seeds": [0],
         "training": TRAINING, "executor": {"kind": "local", "workers": 0, "threads": 1}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard (dev extra) not installed")
def test_a_logged_study_is_one_tensorboard_folder_with_one_run_per_cell(tiny_checkpoint, tmp_path, monkeypatch,
                                                                        capsys):
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    monkeypatch.setattr(progress, "is_terminal", lambda stream: False)  # a log, whatever runs the tests
    monkeypatch.setattr(progress, "PLAIN_SECONDS", 0.05)
    ckpt, _ = tiny_checkpoint
    out = tmp_path / "study"
    summary = run_study(load_spec(str(write_spec(tmp_path, ckpt))), out)
    assert summary["done"] == summary["total"] == 2
    ids = {"scenes-caption.lora.b1.n16.s0", "scenes-caption.frozen.n16.s0"}
    # `tensorboard --logdir STUDY/runs`: one run per cell, named by its id
    tb = EventMultiplexer(size_guidance={"scalars": 0, "tensors": 0}).AddRunsFromDirectory(str(out / "runs"))
    tb.Reload()
    assert set(tb.Runs()) == ids
    for cell in ids:
        curve = json.loads((out / "runs" / cell / "curve.json").read_text())
        val = [(e.step, e.value) for e in tb.Scalars(cell, "val/cider_d")]
        assert [s for s, _ in val] == [row["step"] for row in curve]
        assert [v for _, v in val] == pytest.approx([row["val_score"] for row in curve], rel=1e-6)
        assert [e.step for e in tb.Scalars(cell, "result/converged")] == [curve[-1]["step"]]
    text = capsys.readouterr().out
    assert f"tensorboard --logdir {out / 'runs'}" in text
    assert re.search(r"\[1/2, ETA \S+\] scenes-caption\.\S+: cider_d", text)  # one line per finished run
    assert "\r" not in text


def test_without_the_package_a_logged_study_stops_before_any_cell(tiny_checkpoint, tmp_path, monkeypatch):
    ckpt, _ = tiny_checkpoint
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    spec = load_spec(str(write_spec(tmp_path, ckpt)))
    for attempt in (lambda: run_study(spec, tmp_path / "study"), lambda: dry_run(spec)):
        with pytest.raises(UserError) as e:
            attempt()
        message = str(e.value)
        assert "\n" not in message and message.startswith(f"{spec.source}: log tensorboard")
        assert "pip install 'vlpeft[tensorboard]'" in message
    assert not (tmp_path / "study").exists()


def test_study_progress_prints_a_plain_line_between_finished_runs(monkeypatch, capsys):
    monkeypatch.setattr(progress, "is_terminal", lambda stream: False)
    monkeypatch.setattr(progress, "PLAIN_SECONDS", 0.02)
    p = Progress(3)
    time.sleep(0.1)
    p.finished("a.lora.b1.n16.s0", {"status": "done", "metrics": {"metric": "cider_d", "test_score": 0.5},
                                    "started": 1.0, "ended": 3.0})
    time.sleep(0.1)
    p.finished("b.lora.b1.n16.s0", {"status": "failed", "reason": "diverged", "started": 1.0, "ended": 2.0})
    time.sleep(0.1)
    p.close()
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert re.fullmatch(r"study: 0/3 runs done, 0m00s elapsed, ETA \?", lines[0])
    assert "[1/3, ETA 0m00s] a.lora.b1.n16.s0: cider_d 0.5 (2 s)" in lines
    assert any(re.fullmatch(r"study: 2/3 runs done, 1 failed, 0m00s elapsed, [0-9.e+]+ runs/h, ETA 0m00s", x)
               for x in lines)
    assert "\r" not in out + err and err == ""
    assert not [t for t in threading.enumerate() if t.name == "vlpeft-progress"]
    quiet = Progress(3, quiet=True)
    assert quiet.beat is None and quiet.bar is None
