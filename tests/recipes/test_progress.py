"""Progress in logs: a tqdm bar on a terminal only; plain lines (step, rate, ETA) when stdout is not a
terminal, from pretrain and finetune as commands whose output goes to a pipe; no carriage returns."""

import os
import re
import subprocess
import sys
import threading
import time

import pytest

from vlpeft.recipes import progress
from vlpeft.recipes.progress import Steps

LINE = r"step \d+/\d+ \(\d+%\), [0-9.e+-]+ steps/s, ETA (\?|\d+m\d\ds)"


def progress_threads():
    return [t for t in threading.enumerate() if t.name == "vlpeft-progress"]


def test_a_log_gets_plain_lines_between_steps_and_no_bar(monkeypatch, capsys):
    monkeypatch.setattr(progress, "is_terminal", lambda stream: False)
    monkeypatch.setattr(progress, "PLAIN_SECONDS", 0.02)
    with Steps(4, "demo") as bar:
        for step in bar:
            bar.set_postfix(loss=round(1.0 / (step + 1), 3))
            time.sleep(0.05)
        bar.doing("scoring")
        time.sleep(0.05)
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) >= 4 and all(re.fullmatch(rf"demo: {LINE}(; loss [0-9.]+)?( \(scoring\))?", x) for x in lines)
    assert "demo: step 4/4 (100%)" in out and "(scoring)" in lines[-1]
    assert "\r" not in out + err and err == ""  # no tqdm bar in a log
    assert not progress_threads()


def test_a_terminal_gets_the_tqdm_bar_and_no_plain_lines(monkeypatch, capsys):
    monkeypatch.setattr(progress, "is_terminal", lambda stream: True)
    monkeypatch.setattr(progress, "PLAIN_SECONDS", 0.01)
    with Steps(3, "demo") as bar:
        for _ in bar:
            time.sleep(0.03)
    out, err = capsys.readouterr()
    assert out == "" and "demo" in err and "3/3" in err  # tqdm draws on stderr
    assert not progress_threads()


def test_a_cap_says_at_most_and_disabled_progress_prints_nothing(monkeypatch, capsys):
    monkeypatch.setattr(progress, "is_terminal", lambda stream: False)
    bar = Steps(100, "cell", cap=True)
    for step in bar:
        if step == 9:
            break
    time.sleep(0.01)
    assert re.fullmatch(r"cell: step 10 of at most 100 \(10%\), [0-9.e+-]+ steps/s, ETA at most \d+m\d\ds",
                        bar.describe())
    bar.close()
    with Steps(5, "quiet", enabled=False) as quiet:
        assert quiet.bar is None and quiet.beat is None
    assert capsys.readouterr() == ("", "")


def test_the_thread_ends_when_the_loop_fails(monkeypatch):
    monkeypatch.setattr(progress, "is_terminal", lambda stream: False)
    with pytest.raises(ValueError), Steps(5, "failing") as bar:
        for _ in bar:
            raise ValueError
    assert not progress_threads()


def command(*args):
    """`vlpeft ARGS` with stdout and stderr to pipes (as in a batch job's log), a line every 10 ms."""
    env = {**os.environ, "VLPEFT_PROGRESS_SECONDS": "0.01"}
    r = subprocess.run([sys.executable, "-m", "vlpeft.cli", *map(str, args)], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stdout + r.stderr  # no carriage-return bars in a log
    return r.stdout.splitlines()


@pytest.mark.slow
def test_pretrain_to_a_log_prints_plain_progress_lines(tmp_path):
    lines = command("pretrain", "--out", tmp_path / "ckpt", "--steps", 6, "--scenes", 64, "--batch-size", 8,
                    "--no-eval")
    plain = [x for x in lines if x.startswith("pretrain: ")]
    assert plain and all(re.match(rf"pretrain: {LINE}", x) for x in plain), lines
    assert lines[-1].startswith("pre-trained tiny for 6 steps")


def test_finetune_to_a_log_prints_plain_progress_lines(tiny_checkpoint, tmp_path):
    ckpt, _ = tiny_checkpoint
    lines = command("finetune", "--model", ckpt, "--task", "easyvqa-vqa", "--method", "lora", "--data-size", 32,
                    "--length-policy", "steps", "--steps", 4, "--batch-size", 16, "--val-limit", 20,
                    "--test-limit", 20, "--evals", 2, "--out", tmp_path / "run")
    plain = [x for x in lines if x.startswith("easyvqa-vqa lora: ")]
    assert plain and all(re.match(rf"easyvqa-vqa lora: {LINE}", x) for x in plain), lines
    assert any(x.endswith("(validating)") for x in plain)  # a line during an evaluation, not only between steps
    assert (tmp_path / "run" / "metrics.json").is_file()
