"""Reliability: kills at chosen moments lose and duplicate nothing; divergence fails one run, not the
study; many workers share one store; the same spec gives the same scores."""

import os
import signal
import sqlite3
import subprocess
import sys

import pytest
import yaml

TRAINING = {"length_policy": "steps", "steps": 6, "batch_size": 8, "evals": 2, "val_limit": 8, "test_limit": 16}


def spec_file(tmp_path, ckpt, name="spec.yaml", **changes):
    d = {"name": "reliable", "model": str(ckpt), "tasks": ["easyvqa-vqa", "scenes-caption"],
         "methods": {"lora": {"budgets": [1]}, "frozen": {}}, "data_sizes": [16, 32], "seeds": [0],
         "training": dict(TRAINING), "executor": {"kind": "local", "workers": 0, "threads": 1}}
    d.update(changes)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(d))
    return path


def study(spec, out, *extra, crash=None, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != "VLPEFT_CRASH"}
    if crash:
        env["VLPEFT_CRASH"] = crash
    return subprocess.run([sys.executable, "-m", "vlpeft.cli", "study", str(spec), "--out", str(out), *extra],
                          capture_output=True, text=True, env=env, timeout=timeout)


def table(out):
    con = sqlite3.connect(out / "results.sqlite")
    rows = con.execute("SELECT id, status, test_score FROM runs ORDER BY id").fetchall()
    con.close()
    return rows


@pytest.fixture(scope="module")
def reference(tiny_checkpoint, tmp_path_factory):
    ckpt, _ = tiny_checkpoint
    tmp = tmp_path_factory.mktemp("reference")
    spec = spec_file(tmp, ckpt)
    r = study(spec, tmp / "study")
    assert r.returncode == 0, r.stdout + r.stderr
    return table(tmp / "study")


@pytest.mark.parametrize("crash", ["train_step:9", "result_write:2", "after_result:3"])
def test_sigkill_then_resume_equals_an_uninterrupted_run(tiny_checkpoint, tmp_path, reference, crash):
    ckpt, _ = tiny_checkpoint
    spec = spec_file(tmp_path, ckpt)
    killed = study(spec, tmp_path / "study", crash=crash)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    partial = table(tmp_path / "study")
    assert 0 < len(partial) and any(status != "done" for _, status, _ in partial)
    resumed = study(spec, tmp_path / "study")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    final = table(tmp_path / "study")
    assert final == reference  # same cells, same scores, one row each, none left running
    again = study(spec, tmp_path / "study")
    assert "0 to run" in again.stdout and table(tmp_path / "study") == reference


def test_ray_driver_killed_then_resumed(tiny_checkpoint, tmp_path, reference):
    pytest.importorskip("ray")
    ckpt, _ = tiny_checkpoint
    spec = spec_file(tmp_path, ckpt)
    try:
        killed = study(spec, tmp_path / "study", "--executor", "ray", crash="after_result:2")
        assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
        resumed = study(spec, tmp_path / "study", "--executor", "ray")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert table(tmp_path / "study") == reference
    finally:  # the killed driver's local Ray instance has no owner left
        subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], capture_output=True, timeout=120)


def test_a_diverging_run_fails_alone_and_the_exit_code_says_so(tiny_checkpoint, tmp_path):
    ckpt, _ = tiny_checkpoint
    spec = spec_file(tmp_path, ckpt, tasks=["easyvqa-vqa"], data_sizes=[16],
                     methods={"lora": {"budgets": [1]}, "boom": {"method": "lora", "budgets": [1], "lr": [1e9]}})
    r = study(spec, tmp_path / "study")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 FAILED" in r.stdout and "Traceback" not in r.stderr
    rows = {i: (s, t) for i, s, t in table(tmp_path / "study")}
    assert rows["easyvqa-vqa.lora.b1.n16.s0"][0] == "done"
    con = sqlite3.connect(tmp_path / "study" / "results.sqlite")
    (status, reason), = con.execute("SELECT status, reason FROM runs WHERE id='easyvqa-vqa.boom.b1.n16.s0'").fetchall()
    assert status == "failed" and reason.startswith("diverged: ") and " at step " in reason
    assert "easyvqa-vqa.boom.b1.n16.s0" in (tmp_path / "study" / "report.md").read_text()


def test_four_workers_one_store_no_lost_or_duplicated_rows(tiny_checkpoint, tmp_path, reference):
    ckpt, _ = tiny_checkpoint
    spec = spec_file(tmp_path, ckpt, executor={"kind": "local", "workers": 4, "threads": 1})
    r = study(spec, tmp_path / "study")
    assert r.returncode == 0, r.stdout + r.stderr
    assert table(tmp_path / "study") == reference  # also: the same scores as one in-process worker
