"""The bad-input catalogue: every malformed input to every command gives one line naming the input
and the problem, exit code 2, no traceback, and leaves every existing file as it was."""

import errno
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from vlpeft.cli import main


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tiny_checkpoint, tmp_path_factory):
    """A folder with a checkpoint, broken files, a finished study and a finished run."""
    ckpt, _ = tiny_checkpoint
    root = tmp_path_factory.mktemp("world")
    shutil.copytree(ckpt, root / "ckpt")
    (root / "empty.json").write_text("")
    (root / "empty-ckpt").mkdir()
    (root / "empty-ckpt" / "config.json").write_text("")
    foreign = root / "foreign-ckpt"
    shutil.copytree(ckpt, foreign)
    cfg = json.loads((foreign / "config.json").read_text())
    cfg["model"]["vision"]["widht"] = 64
    (foreign / "config.json").write_text(json.dumps(cfg))
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 10, 10)).save(root / "ok.png")
    (root / "truncated.png").write_bytes((root / "ok.png").read_bytes()[:60])
    (root / "garbage.sqlite").mkdir()
    (root / "garbage.sqlite" / "results.sqlite").write_bytes(b"this is not a database" * 100)
    spec = {"name": "w", "model": str(root / "ckpt"), "tasks": ["easyvqa-vqa"], "methods": {"lora": {"budgets": [1]}},
            "data_sizes": [16], "seeds": [0], "executor": {"workers": 0},
            "training": {"length_policy": "steps", "steps": 2, "batch_size": 8, "evals": 1, "val_limit": 8,
                         "test_limit": 8}}
    (root / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["study", str(root / "spec.yaml"), "--out", str(root / "study"), "--quiet"]) == 0
    other = dict(spec, training=dict(spec["training"], steps=3))
    (root / "other.yaml").write_text(yaml.safe_dump(other))
    (root / "renamed.yaml").write_text(yaml.safe_dump(dict(spec, name="v", seeds=[0, 1])))
    for name, change in {"typo.yaml": {"methdos": {}}, "type.yaml": {"seeds": "zero"},
                         "empty-grid.yaml": {"data_sizes": []},
                         "budget.yaml": {"methods": {"lora": {"budgets": ["params=3"]}}},
                         "range.yaml": {"data_sizes": [10**8]},
                         "same-size.yaml": {"data_sizes": [0.5, "50%"]}, "task.yaml": {"tasks": ["easyvqa"]}}.items():
        d = dict(spec, **change)
        if "methdos" in change:
            d.pop("methods")
        (root / name).write_text(yaml.safe_dump(d))
    (root / "bad.yaml").write_text("name: [x\nmodel: y\n")
    bomb = "name: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"k{i}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(8))
    (root / "bomb.yaml").write_text(bomb)  # 429 bytes standing for 10^9 values
    (root / "long.yaml").write_text(yaml.safe_dump(dict(spec, seeds="zero " * 20000)))
    (root / "zero.yaml").write_text("")
    (root / "utf16.yaml").write_text(yaml.safe_dump(spec), encoding="utf-16")
    (root / "no-model.yaml").write_text(yaml.safe_dump(dict(spec, model="")))
    from fixtures_data import write_coco

    paths = write_coco(root / "coco")
    next((root / "coco" / "coco" / "val2014").iterdir()).unlink()  # an annotation now points at a missing image
    (root / "coco.yaml").write_text(yaml.safe_dump(dict(spec, tasks=["coco-caption"], paths=paths)))
    run = root / "run"
    assert main(["finetune", "--model", str(root / "ckpt"), "--task", "easyvqa-vqa", "--method", "lora",
                 "--budget", "1",
                 "--data-size", "16", "--length-policy", "steps", "--steps", "2", "--batch-size", "8",
                 "--val-limit", "8", "--test-limit", "8", "--out", str(run), "--quiet"]) == 0
    broken_run = root / "broken-run"
    shutil.copytree(run, broken_run)
    (broken_run / "metrics.json").write_text("")
    from safetensors.torch import load_file, save_file

    other = root / "other-ckpt"  # a valid checkpoint with other weights
    shutil.copytree(ckpt, other)
    state = load_file(other / "model.safetensors")
    first = sorted(state)[0]
    state[first] = state[first] + 0.01
    save_file(state, str(other / "model.safetensors"))
    torn = root / "torn-ckpt"  # the weights file cut short
    shutil.copytree(ckpt, torn)
    (torn / "model.safetensors").write_bytes((ckpt / "model.safetensors").read_bytes()[:100_000])
    nan = root / "nan-ckpt"  # random bytes in the middle of the weights file
    shutil.copytree(ckpt, nan)
    raw = bytearray((nan / "model.safetensors").read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 4096] = b"\xff" * 4096
    (nan / "model.safetensors").write_bytes(bytes(raw))
    text = (root / "spec.yaml").read_text()
    (root / "dup.yaml").write_text(text + "seeds: [1, 2]\n")  # `seeds` is in spec.yaml already
    nan_training = dict(spec["training"], warmup_ratio=float("nan"))
    (root / "nan.yaml").write_text(yaml.safe_dump(dict(spec, training=nan_training)))
    (root / "big-seed.yaml").write_text(yaml.safe_dump(dict(spec, seeds=[99999999999999999999])))
    inf_lr = {"lora": {"budgets": [1], "lr": [float("inf")]}}
    (root / "inf-lr.yaml").write_text(yaml.safe_dump(dict(spec, methods=inf_lr)))
    leak = write_coco(root / "leak")
    data = json.loads(Path(leak["karpathy_json"]).read_text())
    data["images"].append(dict(data["images"][4], split="train"))  # a test image also under train
    Path(leak["karpathy_json"]).write_text(json.dumps(data))
    (root / "leak.yaml").write_text(yaml.safe_dump(dict(spec, tasks=["coco-caption"], paths=leak)))
    corrupt = write_coco(root / "corrupt")
    victim = root / "corrupt" / "coco" / "val2014" / "COCO_val2014_000000000004.jpg"  # the val split's image
    victim.write_bytes(victim.read_bytes()[:40])  # exists, does not decode
    corrupt_spec = dict(spec, tasks=["coco-caption"], paths=corrupt, data_sizes=[2])
    (root / "corrupt.yaml").write_text(yaml.safe_dump(corrupt_spec))
    (root / "cuda.yaml").write_text(yaml.safe_dump(dict(spec, training=dict(spec["training"], device="cuda"))))
    (root / "text-len.yaml").write_text(yaml.safe_dump(dict(spec, training=dict(spec["training"], max_text_len=1000))))
    (root / "placement.yaml").write_text(yaml.safe_dump(dict(spec, methods={"lora": {"budgets": [1],
                                                                                     "options": {"placement": 5}}})))
    seed = root / "seed-ckpt"  # a pretrain.json whose seed is text
    shutil.copytree(ckpt, seed)
    record = json.loads((seed / "pretrain.json").read_text())
    (seed / "pretrain.json").write_text(json.dumps(dict(record, seed="zero")))
    (root / "full-disk.yaml").write_text(yaml.safe_dump(dict(
        spec, methods={"lora": {"budgets": [1, 2, 4]}, "frozen": {}}, data_sizes=[16, 32], seeds=[0, 1],
        training=dict(spec["training"], val_limit=4, test_limit=4))))
    (root / "bert-ckpt").mkdir()
    (root / "bert-ckpt" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return root


def ft(*args, task="easyvqa-vqa", method="lora", out="{w}/y"):
    """A `vlpeft finetune` command line on the world's checkpoint, with `args` before --out."""
    return ["finetune", "--model", "{w}/ckpt", "--task", task, "--method", method, *args, "--out", out]


CASES = [  # (argv with {w} for the world folder, what the one line must say)
    (["pretrain", "--preset", "huge", "--out", "{w}/x"], "unknown model preset 'huge'"),
    (["pretrain", "--steps", "0", "--out", "{w}/x"], "steps must be positive"),
    (["pretrain", "--out", "{w}/ckpt"], "already holds a checkpoint"),
    (["pretrain", "--out", "{w}/x", "--force", "--if-missing"], "not allowed with argument"),
    (["study", "{w}/bomb.yaml", "--dry-run"], "bomb.yaml: its aliases expand to more than 100,000 values"),
    (["study", "{w}/long.yaml", "--dry-run"], "seeds must be an integer, got 'zero zero"),
    (["caption", "--model", "{w}/nowhere", "--scenes", "2"], "nowhere"),
    (["caption", "--model", "{w}/ckpt", "--scenes", "2", "--prompt", " ".join(["a red square"] * 21)],
     "caption: the prompt is 63 tokens, which leaves 0 of the 64 text positions for the caption"),
    (["finetune", "--model", "{w}/ckpt", "--task", "easyvqa-vqa", "--method", "lora", "--max-text-len", "1000",
      "--out", "{w}/x"], "max_text_len 1000: more than the checkpoint's 64 text positions"),
    (["finetune", "--model", "{w}/ckpt", "--task", "scenes-caption", "--method", "lora", "--task-option",
      "prompt=" + " ".join(["a red square"] * 13), "--out", "{w}/x"],
     "task scenes-caption: the prompt is 39 tokens, which leaves 0 of the 40 text positions for the caption"),
    (["caption", "--model", "{w}/empty-ckpt", "--scenes", "2"], "is empty"),
    (["caption", "--model", "{w}/foreign-ckpt", "--scenes", "2"], "widht"),
    (["caption", "--model", "{w}/ckpt", "{w}/truncated.png"], "truncated.png"),
    (["caption", "--model", "{w}/bert-ckpt", "{w}/ok.png"], "not a BLIP checkpoint"),
    (["caption", "--model", "{w}/ckpt", "{w}/missing.png"], "missing.png: image not found"),
    (["caption", "--model", "{w}/ckpt"], "give IMAGE files or --scenes"),
    (["methods", "--model", "{w}/ckpt", "--method", "lroa"], "lroa"),
    (ft(task="easyvqa"), "easyvqa"),
    (ft("--budget", "1000000000"), "lora: rank 1,000,000,000 is more than 4096"),
    (ft("--options", '{"rank": 3000}'), "lora: rank 3,000 trains 18,432,000 parameters, more than the model's own"),
    (ft("--options", '{"rank": 16}', "--budget", "2"), "lora: rank 16 given in the options and a budget (knob=2) too"),
    (ft("--options", '{"placement": 5}'), "lora options placement must be a list, got 5"),
    (ft("--options", '{"alpha": NaN}'), "lora: alpha must be a finite number, got nan"),
    (["study", "{w}/text-len.yaml", "--dry-run"],
     "text-len.yaml: lora on easyvqa-vqa: max_text_len 1000: more than the checkpoint's 64 text positions"),
    (["study", "{w}/utf16.yaml", "--dry-run"], "utf16.yaml: study spec is UTF-16 text; save it as UTF-8"),
    (["study", "{w}/no-model.yaml", "--dry-run"], "no-model.yaml: model: empty; name a checkpoint folder or a hub id"),
    (["caption", "--model", "{w}/ckpt", "https://example.com/a.png"], "https://example.com/a.png: a URL"),
    (["caption", "--model", "{w}/ckpt", "--scenes", "2", "{w}/ok.png"], "or --scenes N, not both"),
    (["evaluate", "--model", "{w}/torn-ckpt", "--peft", "{w}/run"], "torn-ckpt/model.safetensors: cannot read weights"),
    (["study", "{w}/renamed.yaml", "--out", "{w}/study"], "study: holds the study 'w', not 'v'; use another --out"),
    (["study", "{w}/same-size.yaml", "--dry-run"],
     "same-size.yaml: data_sizes 0.5 and '50%' are both 17378 examples of easyvqa-vqa's 34756; give each size once"),
    (["study", "{w}/placement.yaml", "--dry-run"], "methods.lora: lora: placement must be a list, got 5"),
    (["caption", "--model", "{w}/seed-ckpt", "--scenes", "1"],
     "pretrain.json: expected a JSON object whose seed is an integer, got 'zero'"),
    (ft("--budget", "params=3"), "no rank reaches"),
    (ft("--data-size", "0"), "data_size"),
    (ft("--data-size", "99999999"), "data_size"),
    (ft("--data-size", "150%"), "150%"),
    (ft("--data-size", "1.5"), "data_size"),
    (ft(method="lorra"), 'did you mean "lora"'),
    (ft("--budget", "0"), "positive"),
    (ft("--budget", "4", method="full"), "no size knob"),
    (ft(task="coco-caption"), "paths lacks 'karpathy_json'"),
    (ft("--options", "{bad"), "--options: not valid JSON"),
    (ft("--options", '{"rnak": 2}'), "did you mean"),
    (ft("--batch-size", "0"), "batch_size"),
    (ft("--seed", "x"), "invalid int value"),
    (ft(out="{w}/run"), "already holds a finished run"),
    (["evaluate", "--model", "{w}/ckpt", "--peft", "{w}/nowhere"], "nowhere"),
    (["evaluate", "--model", "{w}/ckpt", "--peft", "{w}/broken-run"], "is empty"),
    (["evaluate", "--model", "{w}/ckpt", "--peft", "{w}/run", "--task", "scenes-vqa"], "trained on"),
    (["study", "{w}/bad.yaml", "--out", "{w}/s2"], "invalid YAML at line"),
    (["study", "{w}/zero.yaml", "--out", "{w}/s2"], "spec is empty"),
    (["study", "{w}/typo.yaml", "--out", "{w}/s2"], "did you mean \"methods\""),
    (["study", "{w}/type.yaml", "--out", "{w}/s2"], "seeds must be an integer"),
    (["study", "{w}/empty-grid.yaml", "--out", "{w}/s2"], "data_sizes is empty"),
    (["study", "{w}/budget.yaml", "--out", "{w}/s2"], "no rank reaches"),
    (["study", "{w}/range.yaml", "--out", "{w}/s2"], "data_sizes 100000000"),
    (["study", "{w}/task.yaml", "--out", "{w}/s2"], "unknown task 'easyvqa'"),
    (["study", "{w}/coco.yaml", "--out", "{w}/s2"], "coco"),
    (["study", "{w}/other.yaml", "--out", "{w}/study"], "holds a different study"),
    (["study", "{w}/spec.yaml", "--out", "{w}/s2", "--address", "x:1"], "--address needs --executor ray"),
    (["study", "nonexistent-preset", "--out", "{w}/s2"], "neither a YAML file nor a preset"),
    (["report", "{w}/nowhere"], "no results.sqlite"),
    (["report", "{w}/garbage.sqlite"], "not a vlpeft results store"),
    (["advise", "{w}/study", "--task", "scenes-caption", "--data-size", "10"], "no finished runs of task"),
    (["advise", "{w}/study", "--task", "easyvqa-vqa", "--data-size", "10", "--max-params", "1"], "--max-params"),
    # round two: inputs that gave a wrong result, a traceback or lost work
    (["evaluate", "--model", "{w}/other-ckpt", "--peft", "{w}/run"], "this run adapted"),
    (["caption", "--model", "{w}/nan-ckpt", "--scenes", "1"], "non-finite values (nan or inf); the file is corrupt"),
    (["study", "{w}/dup.yaml", "--out", "{w}/s2"], "key 'seeds' is given twice (lines"),
    (["study", "{w}/nan.yaml", "--out", "{w}/s2"],
     "nan.yaml: training.warmup_ratio must be a finite number >= 0 and < 1, got nan"),
    (["study", "{w}/inf-lr.yaml", "--out", "{w}/s2"], "methods.lora: lr must be a finite number >= 0, got inf"),
    (["study", "{w}/big-seed.yaml", "--out", "{w}/s2", "--dry-run"], "seeds must be an integer >= 0 and <= 4294967295"),
    (["study", "{w}/leak.yaml", "--out", "{w}/s2", "--dry-run"], "in both the train and the test split"),
    (["study", "{w}/corrupt.yaml", "--out", "{w}/s2", "--dry-run"], "cannot read image"),
    (["study", "{w}/spec.yaml", "--out", "{w}/ok.png"], "study folder is a file, not a folder"),
    (["study", "{w}/spec.yaml", "--out", "{w}/s2", "--threads", "0"], "--threads 0: must be an integer >= 1"),
    (ft(out="{w}/ok.png/run"),
     "ok.png is a file, not a folder"),
    (ft("--threads", "-1"),
     "threads must be an integer >= 0, got -1"),
    (ft("--seed", "-1"),
     "seed must be an integer >= 0 and <= 4294967295, got -1"),
    (ft("--lr", "inf"),
     "lr must be a finite number >= 0, got inf"),
    (["pretrain", "--out", "{w}/ok.png/ckpt", "--steps", "1"], "ok.png is a file, not a folder"),
    (["pretrain", "--out", "{w}/x", "--threads", "-1"], "threads must be an integer >= 0, got -1"),
    (["caption", "--model", "{w}/ckpt", "--scenes", "1", "--beams", "0"], "--beams 0: must be >= 1"),
    (["caption", "--model", "{w}/ckpt", "--scenes", "1", "--max-new-tokens", "0"], "--max-new-tokens 0: must be >= 1"),
    (["caption", "--model", "{w}/ckpt", "{w}"], "is a folder, not an image file"),
    (["advise", "{w}/study", "--task", "easyvqa-vqa", "--data-size", "10000000"], "outside the sizes this study ran"),
]


if not __import__("torch").cuda.is_available():  # (with CUDA the same spec is a valid study)
    CASES.append((["study", "{w}/cuda.yaml", "--dry-run"],
                  "cuda.yaml: lora on easyvqa-vqa: device cuda: no CUDA device is available on this machine"))


@pytest.mark.parametrize("argv, says", CASES, ids=[" ".join(a[:2]) + f"-{i}" for i, (a, _) in enumerate(CASES)])
def test_bad_input_is_one_line_exit_2_and_changes_no_file(world, capsys, argv, says):
    before = snapshot(world)
    rc = run_cli([a.replace("{w}", str(world)) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert says in err, err
    assert snapshot(world) == before


def run_cli(argv):
    try:
        return main(argv)
    except SystemExit as e:  # argparse's own usage errors exit from inside
        return e.code


def test_there_are_at_least_25_cases():
    assert len(CASES) >= 25


def test_a_full_disk_gives_one_line_and_leaves_no_corrupt_file(tmp_path, monkeypatch):
    from vlpeft.errors import UserError
    from vlpeft.io import write_json

    target = tmp_path / "metrics.json"
    write_json(target, {"score": 1})
    before = target.read_bytes()

    def full(*_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.fsync", full)
    with pytest.raises(UserError, match=r"metrics.json: cannot write \(No space left on device\); no file was changed"):
        write_json(target, {"score": 2})
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no temporary file left


FULL_DISK = """
import json, os, sqlite3, subprocess, sys
disk, world = sys.argv[1], sys.argv[2]
def vlpeft(*args):
    r = subprocess.run([sys.executable, "-m", "vlpeft.cli", *args], capture_output=True, text=True)
    return {"rc": r.returncode, "err": r.stderr.strip().splitlines()[-1:] , "lines": len(r.stderr.strip().splitlines()),
            "traceback": "Traceback" in r.stderr}
def statuses():
    con = sqlite3.connect(os.path.join(disk, "study", "results.sqlite"))
    return dict(con.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall())
out = {}
out["finetune"] = vlpeft("finetune", "--model", f"{world}/ckpt", "--task", "easyvqa-vqa", "--method", "full",
                         "--length-policy", "steps", "--steps", "2", "--data-size", "16", "--val-limit", "4",
                         "--test-limit", "4", "--quiet", "--out", f"{disk}/run")
out["pretrain"] = vlpeft("pretrain", "--steps", "2", "--scenes", "64", "--quiet", "--out", f"{disk}/ckpt")
out["study"] = vlpeft("study", f"{world}/full-disk.yaml", "--out", f"{disk}/study", "--quiet")
out["left"] = sorted(os.listdir(disk))
out["stopped"] = statuses()
subprocess.run(["mount", "-o", "remount,size=50m", disk], check=True)  # space freed
out["resumed"] = vlpeft("study", f"{world}/full-disk.yaml", "--out", f"{disk}/study", "--quiet")
out["finished"] = statuses()
print(json.dumps(out))
"""


def test_a_full_disk_stops_each_command_with_one_line_and_a_study_resumes_once_there_is_room(world, tmp_path):
    """A real full disk (a 400 kB tmpfs in a user namespace): safetensors and SQLite report it in their
    own exception types; each command must still say it in one line, leave nothing half-written,
    and a study keep its finished runs and complete on the same command once there is room."""
    import subprocess
    import sys

    if not _can_mount_read_only(tmp_path):
        pytest.skip("cannot mount in a user namespace here")
    disk = tmp_path / "disk"
    disk.mkdir()
    (tmp_path / "full_disk.py").write_text(FULL_DISK)
    r = subprocess.run(["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o size=400k tmpfs "{disk}" && '
                        f'"{sys.executable}" "{tmp_path / "full_disk.py"}" "{disk}" "{world}"'],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for command, where in (("finetune", "run/peft_model.safetensors"), ("pretrain", "ckpt/model.safetensors"),
                           ("study", "/study/")):  # whichever file of the study met the full disk
        got = out[command]
        assert got["rc"] == 2 and got["lines"] == 1 and not got["traceback"], (command, got)
        assert where in got["err"][0] and "No space left on device" in got["err"][0], got["err"][0]
    assert "the study stopped (every finished run is kept)" in out["study"]["err"][0]
    assert out["left"] == ["study"]  # the run and the checkpoint folders these commands made are gone
    assert out["stopped"].get("done", 0) >= 1 and "failed" not in out["stopped"]  # no cell blamed for the disk
    assert out["resumed"]["rc"] == 0, out["resumed"]
    assert out["finished"] == {"done": 16}


def _can_mount_read_only(tmp_path) -> bool:
    import subprocess

    probe = tmp_path / "probe"
    probe.mkdir()
    remount = f"mount --bind {probe} {probe} && mount -o remount,bind,ro {probe}"
    r = subprocess.run(["unshare", "-rm", "sh", "-c", remount],
                       capture_output=True)
    return r.returncode == 0


@pytest.mark.parametrize("command", ["finetune", "study", "pretrain"])
def test_a_read_only_output_folder_is_refused_before_any_training(world, tmp_path, command):
    """`--out` on a read-only bind mount (in a private mount namespace): one line, exit 2, before any step."""
    import shlex
    import subprocess
    import sys
    import time

    if shutil.which("unshare") is None or not _can_mount_read_only(tmp_path):
        pytest.skip("no unprivileged read-only bind mounts here (unshare -rm)")
    ro = tmp_path / "ro"
    ro.mkdir()
    argv = {"finetune": ["finetune", "--model", str(world / "ckpt"), "--task", "easyvqa-vqa", "--method", "lora",
                         "--out", str(ro / "run")],
            "study": ["study", str(world / "spec.yaml"), "--out", str(ro / "study")],
            "pretrain": ["pretrain", "--out", str(ro / "ckpt")]}[command]
    cli = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "vlpeft.cli", *argv])
    t0 = time.time()
    remount = f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro}"
    r = subprocess.run(["unshare", "-rm", "sh", "-c", f"{remount} && {cli}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Read-only file system" in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert list(ro.iterdir()) == [] and time.time() - t0 < 60  # refused up front, not after training


def test_a_finished_study_on_read_only_media_runs_again_as_a_no_op(world, tmp_path):
    """The same command on a finished study whose folder is now read-only (an archive, a mounted
    snapshot): nothing to do, so nothing to write: exit 0 and the summary; a spec with more cells is
    still refused in one line."""
    import subprocess
    import sys

    if shutil.which("unshare") is None or not _can_mount_read_only(tmp_path):
        pytest.skip("no unprivileged read-only bind mounts here (unshare -rm)")
    study = tmp_path / "study"
    shutil.copytree(world / "study", study)
    before = snapshot(study)
    (tmp_path / "more.yaml").write_text((world / "spec.yaml").read_text().replace("- 0", "- 0\n- 1", 1))
    cli = f"{sys.executable} -m vlpeft.cli study"
    r = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount --bind {study} {study} && "
                        f"mount -o remount,bind,ro {study} && {cli} {world / 'spec.yaml'} --out {study} && "
                        f"{cli} {tmp_path / 'more.yaml'} --out {study}"], capture_output=True, text=True, timeout=300)
    assert "study w: 1/1 runs done; ran 0" in r.stdout, r.stdout + r.stderr
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"vlpeft: error: {study}: cannot write the study folder ({study}: Read-only file system)"], r.stderr
    assert snapshot(study) == before


def _finetune_argv(world, out, rank):
    return ["finetune", "--model", str(world / "ckpt"), "--task", "easyvqa-vqa", "--method", "lora", "--budget",
            str(rank), "--data-size", "16", "--length-policy", "steps", "--steps", "2", "--batch-size", "8",
            "--val-limit", "8", "--test-limit", "8", "--out", str(out), "--quiet"]


def test_finetune_refuses_a_folder_it_does_not_own_and_one_another_finetune_holds(world, tmp_path, capsys):
    from vlpeft import lock

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "curve.json").write_text('{"the user": "own data"}')
    before = snapshot(mine)
    assert main(_finetune_argv(world, mine, 2)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not empty and not a vlpeft run folder" in err and snapshot(mine) == before

    busy = tmp_path / "busy"
    busy.mkdir()
    with lock.hold(busy, "finetune"):  # another finetune writing it
        assert main(_finetune_argv(world, busy, 2)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "another vlpeft finetune is writing this run folder (process" in err
    assert not (busy / "metrics.json").exists()


def test_a_kill_while_force_replaces_a_run_leaves_no_mix_of_old_record_and_new_weights(world, tmp_path, capsys):
    import os
    import subprocess
    import sys

    run = tmp_path / "run"
    assert main(_finetune_argv(world, run, 2)) == 0
    env = dict(os.environ, VLPEFT_CRASH="run_weights_written")
    r = subprocess.run([sys.executable, "-m", "vlpeft.cli", *_finetune_argv(world, run, 8), "--force"], env=env,
                       capture_output=True, text=True)
    assert r.returncode == -9, r.stderr  # killed between the new weights and the new record
    assert not (run / "metrics.json").exists()  # the old record (rank 2) went first
    assert json.loads((run / "peft_config.json").read_text())["config"]["rank"] == 8
    capsys.readouterr()
    assert main(["evaluate", "--model", str(world / "ckpt"), "--peft", str(run), "--task", "easyvqa-vqa"]) == 2
    assert main(_finetune_argv(world, run, 8)) == 0  # an unfinished run is taken over without --force
    assert json.loads((run / "metrics.json").read_text())["knob_value"] == 8


def test_an_echoed_value_is_cut_and_costs_nothing_to_show():
    from vlpeft.errors import MAX_MESSAGE, UserError, shown

    nested = ["x"] * 10
    for _ in range(8):
        nested = [nested] * 10  # 10^9 items behind 90 references
    assert len(shown(nested)) <= 120 and len(shown("y" * 10**6)) <= 120
    assert len(str(UserError("z" * 10**6))) <= MAX_MESSAGE and "characters, cut" in str(UserError("z" * 10**6))
