"""End-to-end CLI behaviour on a tiny checkpoint: outputs, and one-line errors with exit code 2."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vlpeft.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "vlpeft.cli", *map(str, args)], capture_output=True, text=True)


def test_caption_prints_one_line_per_image(tiny_checkpoint, tmp_path, capsys):
    ckpt, _ = tiny_checkpoint
    paths = []
    for i in range(3):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    assert main(["caption", "--model", str(ckpt), *map(str, paths)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(p) for p in paths]


def test_caption_scenes_and_prompt(tiny_checkpoint, capsys):
    ckpt, _ = tiny_checkpoint
    assert main(["caption", "--model", str(ckpt), "--scenes", "2", "--prompt", "a picture of", "--beams", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(line.split("\t")[1].startswith("a picture of") for line in lines)


def bad_inputs(tmp_path, ckpt):
    trunc = tmp_path / "trunc.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8) + 90).save(trunc)
    trunc.write_bytes(trunc.read_bytes()[: trunc.stat().st_size // 2])
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    empty = tmp_path / "emptycfg"
    empty.mkdir()
    (empty / "config.json").write_text("")
    return {
        "missing checkpoint": (["caption", "--model", tmp_path / "nope", trunc], "nope"),
        "other architecture": (["caption", "--model", other, trunc], "not a BLIP checkpoint"),
        "empty config": (["caption", "--model", empty, trunc], "empty"),
        "truncated image": (["caption", "--model", ckpt, trunc], "trunc.png"),
        "missing image": (["caption", "--model", ckpt, tmp_path / "missing.png"], "missing.png"),
        "existing output": (["pretrain", "--out", ckpt, "--steps", "1"], "already holds a checkpoint"),
        "unknown preset": (["pretrain", "--preset", "tinny", "--out", tmp_path / "x", "--steps", "1"], 'did you mean "tiny"'),
        "conflicting flags": (["pretrain", "--out", tmp_path / "x", "--force", "--if-missing"], "not allowed with"),
        "negative steps": (["pretrain", "--out", tmp_path / "x", "--steps", "-3"], "steps must be positive"),
    }


@pytest.mark.parametrize("case", ["missing checkpoint", "other architecture", "empty config", "truncated image",
                                  "missing image", "existing output", "unknown preset", "conflicting flags",
                                  "negative steps"])
def test_bad_input_gives_one_line_and_exit_2(case, tiny_checkpoint, tmp_path):
    ckpt, _ = tiny_checkpoint
    before = sorted((p.name, p.stat().st_mtime_ns) for p in ckpt.iterdir())
    args, needle = bad_inputs(tmp_path, ckpt)[case]
    r = run_cli(*args)
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr and needle in lines[0], r.stderr
    assert sorted((p.name, p.stat().st_mtime_ns) for p in ckpt.iterdir()) == before
    assert not (tmp_path / "x").exists()


def test_debug_flag_shows_the_traceback(tmp_path):
    r = run_cli("--debug", "caption", "--model", tmp_path / "nope", "x.png")
    assert r.returncode != 0 and "Traceback" in r.stderr
