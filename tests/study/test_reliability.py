"""Reliability: kills at chosen moments lose and duplicate nothing; divergence fails one run, not the
study; many workers share one store; the same spec gives the same scores."""

import os
import signal
import sqlite3
import subprocess
import sys

import pytest
import yaml

from fixtures_study import training_cells, wait_for  # (tests/ is on sys.path)

TRAINING = {"length_policy": "steps", "steps": 6, "batch_size": 8, "evals": 2, "val_limit": 8, "test_limit": 16}


def spec_file(tmp_path, ckpt, name="spec.yaml", **changes):
    d = {"name": "reliable", "model": str(ckpt), "tasks": ["easyvqa-vqa"],  # kills do not depend on the task
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
        subprocess.run(
            [sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], capture_output=True, timeout=120
        )


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


def test_workers_die_with_a_study_process_killed_by_sigkill(tiny_checkpoint, tmp_path):
    """As the out-of-memory killer does: SIGKILL to the driver alone. Its workers (and the resource
    tracker) must not live on under init, computing cells beside a resume or blocked on a pipe."""
    import time

    ckpt, _ = tiny_checkpoint
    spec = spec_file(tmp_path, ckpt, data_sizes=[16], methods={"lora": {"budgets": [1, 2]}},
                     training={**TRAINING, "steps": 400}, executor={"kind": "local", "workers": 2, "threads": 1})
    out = tmp_path / "study"
    p = subprocess.Popen([sys.executable, "-m", "vlpeft.cli", "study", str(spec), "--out", str(out)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert _wait_for_running(out, p)
        deadline = time.time() + 60  # the driver, the resource tracker and two workers
        while len(_session_processes(p.pid)) < 4 and time.time() < deadline and p.poll() is None:
            time.sleep(0.2)
        assert p.poll() is None and len(_session_processes(p.pid)) >= 4, "the study ended before the kill"
        p.kill()
        p.wait(timeout=30)
        deadline = time.time() + 10
        while _session_processes(p.pid) and time.time() < deadline:
            time.sleep(0.2)
        assert _session_processes(p.pid) == []
    finally:
        for pid in _session_processes(p.pid):  # a failing run of this test leaves nothing behind
            os.kill(pid, signal.SIGKILL)


def _session_processes(sid):
    """Live (not zombie) processes of session `sid`."""
    alive = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[3] == str(sid) and fields[0] != "Z":
                alive.append(int(p))
    return alive


def _wait_for_running(out, proc, timeout=120):
    import time

    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.3)
        try:
            if (out / "results.sqlite").exists() and any(s == "running" for _, s, _ in table(out)):
                return True
        except sqlite3.OperationalError:
            pass
    return False


def test_one_study_per_folder_and_a_killed_holder_does_not_block_the_resume(tiny_checkpoint, tmp_path):
    ckpt, _ = tiny_checkpoint
    spec = spec_file(tmp_path, ckpt, tasks=["easyvqa-vqa"], data_sizes=[16], training={**TRAINING, "steps": 400})
    # 400 steps: the winner must still be training when it is killed (40 finished before the kill on a
    # fast 2-core Xeon)
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "vlpeft.cli", "study", str(spec), "--out", str(out)]
    a, b = (subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2))
    loser = None
    while loser is None:  # the one that fails to take the folder exits at once
        for p in (a, b):
            if p.poll() is not None:
                loser = p
        if loser is None:
            import time

            time.sleep(0.2)
    winner = b if loser is a else a
    err = loser.stderr.read()
    assert loser.returncode == 2, err
    assert err.strip().splitlines() == [f"vlpeft: error: {out}: another vlpeft study is writing this study folder "
                                        f"(process {winner.pid} on {__import__('socket').gethostname()} since "
                                        + err.split(" since ", 1)[1].strip()]
    assert "let it finish or stop it, then run again" in err and "Traceback" not in err
    assert _wait_for_running(out, winner), "the study ended before the kill: make its cells longer"
    winner.kill()
    winner.communicate(timeout=60)
    assert (out / ".vlpeft-study.holder").exists()  # left behind by the kill
    resumed = study(spec, out)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert {s for _, s, _ in table(out)} == {"done"} and not (out / ".vlpeft-study.holder").exists()


def _two_cells_training(tiny_checkpoint, tmp_path, **popen):
    """A study of two long LoRA cells started in its own session and left while both fine-tune.
    -> (spec, out, process)."""
    import time

    ckpt, _ = tiny_checkpoint
    spec = spec_file(tmp_path, ckpt, tasks=["easyvqa-vqa"], data_sizes=[16], methods={"lora": {"budgets": [1, 2]}},
                     training={**TRAINING, "steps": 400}, executor={"kind": "local", "workers": 2, "threads": 1})
    # 400 steps: long enough that the two cells are still training when the signal arrives (with 60
    # an idle machine could finish the study in the second before it, and exit 0)
    out = tmp_path / "study"
    p = subprocess.Popen([sys.executable, "-m", "vlpeft.cli", "study", str(spec), "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **popen)
    assert _wait_for_running(out, p)
    deadline = time.time() + 60  # the two workers have started (the driver and the resource tracker are the others)
    while len(_session_processes(p.pid)) < 4 and time.time() < deadline and p.poll() is None:
        time.sleep(0.2)
    assert wait_for(lambda: len(training_cells(out)) >= 2 or p.poll() is not None, 120)  # both fine-tuning
    assert p.poll() is None, "the study ended before the signal: make its cells longer"
    return spec, out, p


def _stopped_cleanly_then_resumes(spec, out, p, code: int, line: str) -> None:
    """The driver exits with `code` saying `line` alone, no worker outlives it, and the study resumes."""
    out_text, err = p.communicate(timeout=120)
    assert p.returncode == code and err.strip() == line, (p.returncode, err, out_text)
    assert wait_for(lambda: _session_processes(p.pid) == [], 10)  # no worker outlives the driver
    resumed = study(spec, out)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert {s for _, s, _ in table(out)} == {"done"}


def test_two_ctrl_c_stop_the_study_and_its_workers_cleanly_and_it_resumes(tiny_checkpoint, tmp_path):
    import time

    # SIGINT as a terminal leaves it: a test runner started in the background by a non-interactive
    # shell ignores SIGINT, and a child would inherit that (and rightly keep ignoring Ctrl-C)
    spec, out, p = _two_cells_training(tiny_checkpoint, tmp_path,
                                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    os.killpg(p.pid, signal.SIGINT)  # what a terminal sends to the whole group, twice
    time.sleep(0.3)
    os.killpg(p.pid, signal.SIGINT)
    _stopped_cleanly_then_resumes(spec, out, p, 130, "vlpeft: interrupted")


def test_sigterm_stops_the_study_and_its_workers_cleanly_and_it_resumes(tiny_checkpoint, tmp_path):
    """`kill PID` (or a scheduler's stop) reaches the driver alone: it stops its workers as after Ctrl-C,
    says so in one line (no resource-tracker warning of leaked semaphores), exits 143, and resumes."""
    spec, out, p = _two_cells_training(tiny_checkpoint, tmp_path)
    p.send_signal(signal.SIGTERM)
    _stopped_cleanly_then_resumes(spec, out, p, 143, "vlpeft: terminated")
