"""The study driver: a tiny grid end to end, resume without duplicates, kill a worker, Ray, exports."""

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fixtures_study import training_cells, wait_for  # (tests/ is on sys.path)
from vlpeft.errors import UserError
from vlpeft.study import load_spec, run_study
from vlpeft.study.spec import with_executor

TRAINING = {"length_policy": "steps", "steps": 4, "batch_size": 8, "evals": 1, "val_limit": 8, "test_limit": 16}


def write_spec(tmp_path, ckpt, name="spec.yaml", **changes):
    d = {"name": "tiny-study", "model": str(ckpt), "tasks": ["scenes-caption", "easyvqa-vqa"],
         "methods": {"lora": {"budgets": [1, 2]}, "frozen": {}}, "data_sizes": [16, 32], "seeds": [0],
         "training": dict(TRAINING), "executor": {"kind": "local", "workers": 0, "threads": 1}}
    d.update(changes)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(d))
    return path


def rows(folder):
    con = sqlite3.connect(folder / "results.sqlite")
    con.row_factory = sqlite3.Row
    out = [dict(r) for r in con.execute("SELECT * FROM runs ORDER BY id")]
    con.close()
    return out


def digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


def scores(folder):
    return {r["id"]: r["test_score"] for r in rows(folder)}


def test_tiny_study_runs_exports_and_a_rerun_changes_nothing(tiny_checkpoint, tmp_path):
    from vlpeft.recipes import features

    features.clear()  # image states already in this process's memory (earlier tests) are not written to disk
    ckpt, _ = tiny_checkpoint
    out = tmp_path / "study"
    summary = run_study(load_spec(str(write_spec(tmp_path, ckpt))), out, quiet=True)
    assert summary == {**summary, "total": 12, "done": 12, "failed": 0, "ran": 12}
    got = rows(out)
    assert len(got) == 12 and {r["status"] for r in got} == {"done"}
    for r in got:
        metrics = json.loads(r["metrics"])
        assert metrics["test_score"] == r["test_score"]
        assert json.loads(r["config"])["task"] == r["task"] == metrics["task"]
        assert r["host"] and r["ended"] >= r["started"] > 0 and r["attempts"] == 1
        assert (out / "runs" / r["id"] / "metrics.json").is_file()
    csv = (out / "results.csv").read_text().splitlines()
    assert len(csv) == 13 and "m.test_score" in csv[0] and "config.data_size" in csv[0]
    report = (out / "report.md").read_text()
    assert "## Verdict matrix" in report and "| scenes-caption | lora |" in report
    assert ("| inference (validation and test alike) | easyvqa-vqa: BLIP's ranking of the candidate answers by "
            "likelihood (the 128 with the likeliest first token, where there are more); scenes-caption: greedy "
            "decoding |") in report  # from the runs' recorded task options
    assert (out / "report.html").is_file() and (out / "figures" / "easyvqa-vqa-data.png").is_file()
    meta = sqlite3.connect(out / "results.sqlite").execute("SELECT value FROM meta WHERE key='consistency'").fetchone()
    assert set(json.loads(meta[0])) == {"scenes-caption", "easyvqa-vqa"}
    assert list((out / "cache" / "features").rglob("*.npy"))  # frozen image states shared by the runs
    before = digests(out)
    again = run_study(load_spec(str(write_spec(tmp_path, ckpt))), out, quiet=True)
    assert again["ran"] == 0 and again["done"] == 12
    assert digests(out) == before


def test_growing_the_grid_runs_only_new_cells_and_interrupted_rows_are_rerun(tiny_checkpoint, tmp_path):
    ckpt, _ = tiny_checkpoint
    out = tmp_path / "study"
    small = write_spec(tmp_path, ckpt, tasks=["easyvqa-vqa"], methods={"lora": {"budgets": [1]}})
    run_study(load_spec(str(small)), out, quiet=True)
    first = scores(out)
    # a driver killed mid-run leaves a 'running' row and no metrics.json; one killed after the run
    # folder was complete but before the row was updated leaves metrics.json behind
    con = sqlite3.connect(out / "results.sqlite")
    con.execute("UPDATE runs SET status='running', test_score=NULL WHERE id='easyvqa-vqa.lora.b1.n16.s0'")
    con.execute("UPDATE runs SET status='running', test_score=NULL WHERE id='easyvqa-vqa.lora.b1.n32.s0'")
    con.commit()
    con.close()
    (out / "runs" / "easyvqa-vqa.lora.b1.n16.s0" / "metrics.json").unlink()
    bigger = write_spec(tmp_path, ckpt, name="bigger.yaml", tasks=["easyvqa-vqa"],
                        methods={"lora": {"budgets": [1]}}, seeds=[0, 1])
    summary = run_study(load_spec(str(bigger)), out, quiet=True)
    assert summary["ran"] == 3  # the two new seed-1 cells and the interrupted run; the other is adopted
    got = rows(out)
    assert len(got) == 4 and len({r["id"] for r in got}) == 4 and {r["status"] for r in got} == {"done"}
    assert {k: v for k, v in scores(out).items() if k in first} == first  # deterministic re-run


def test_a_folder_holding_another_study_or_other_files_is_refused_untouched(tiny_checkpoint, tmp_path):
    ckpt, _ = tiny_checkpoint
    out = tmp_path / "study"
    base = write_spec(tmp_path, ckpt, tasks=["easyvqa-vqa"], methods={"frozen": {}}, data_sizes=[16])
    run_study(load_spec(str(base)), out, quiet=True)
    before = digests(out)
    other = write_spec(tmp_path, ckpt, name="other.yaml", tasks=["easyvqa-vqa"], methods={"frozen": {}},
                       data_sizes=[16], training={**TRAINING, "val_limit": 9})
    with pytest.raises(UserError, match=r"holds a different study \(its training differ"):
        run_study(load_spec(str(other)), out, quiet=True)
    assert digests(out) == before
    relabel = write_spec(tmp_path, ckpt, name="relabel.yaml", tasks=["easyvqa-vqa"], data_sizes=[16],
                         methods={"frozen": {"options": {"placement": ["text_decoder"]}}})
    with pytest.raises(UserError, match="was recorded with other settings"):
        run_study(load_spec(str(relabel)), out, quiet=True)
    assert digests(out) == before
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty and holds no study"):
        run_study(load_spec(str(base)), busy, quiet=True)
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]


def test_a_task_file_whose_data_changed_is_another_study(tiny_checkpoint, tmp_path):
    from fixtures_data import write_user_task
    from vlpeft import store
    from vlpeft.study.spec import fingerprint

    ckpt, _ = tiny_checkpoint
    task_file = write_user_task(tmp_path, "jsonl", "vqa", name="mine")
    spec = write_spec(tmp_path, ckpt, tasks=[str(task_file)], methods={"frozen": {}}, data_sizes=[8])
    out = tmp_path / "study"
    run_study(load_spec(str(spec)), out, quiet=True)
    assert run_study(load_spec(str(spec)), out, quiet=True)["ran"] == 0
    data = task_file.parent / "data.jsonl"
    original = data.read_text()
    data.write_text(original.replace('"answers": ["', '"answers": ["no", "', 1))  # one more answer, same layout
    before = digests(out)
    with pytest.raises(UserError, match=r"holds a different study \(its task_data differ"):
        run_study(load_spec(str(spec)), out, quiet=True)
    assert digests(out) == before
    data.write_text(original)
    # a folder made before task data were compared (no task_data in its identity) still resumes
    con = store.connect(out / "results.sqlite")
    ident = json.loads(store.read_meta(out / "results.sqlite")["identity"])
    del ident["task_data"]
    store.set_meta(con, {"identity": json.dumps(ident, sort_keys=True), "fingerprint": fingerprint(ident)})
    con.close()
    assert run_study(load_spec(str(spec)), out, quiet=True)["ran"] == 0


def test_cosmetic_changes_resume_and_a_folder_of_an_older_version_too(tiny_checkpoint, tmp_path, monkeypatch):
    """The checkpoint named another way (relative, trailing slash) and a comment in a task file are the
    same study; a store whose identity was recorded as older versions did (weights-only digests, task
    files by their bytes, the model as written) resumes; a settings file edited for real does not."""
    import os
    import shutil

    from fixtures_data import write_user_task
    from vlpeft import store
    from vlpeft.model.checkpoint import weights_digest
    from vlpeft.study.runner import file_digest
    from vlpeft.study.spec import fingerprint

    ckpt, _ = tiny_checkpoint
    local = tmp_path / "ckpt"
    shutil.copytree(ckpt, local)
    task_file = write_user_task(tmp_path, "jsonl", "vqa", name="mine")
    spec = write_spec(tmp_path, local, tasks=[str(task_file)], methods={"frozen": {}}, data_sizes=[8])
    out = tmp_path / "study"
    run_study(load_spec(str(spec)), out, quiet=True)
    monkeypatch.chdir(tmp_path)
    again = write_spec(tmp_path, "./ckpt/", name="again.yaml", tasks=[str(task_file)], methods={"frozen": {}},
                       data_sizes=[8])
    task_file.write_text("# my own data\n" + task_file.read_text())
    assert run_study(load_spec(str(again)), out, quiet=True)["ran"] == 0
    # as an older version recorded it
    con = store.connect(out / "results.sqlite")
    ident = json.loads(store.read_meta(out / "results.sqlite")["identity"])
    ident.update(model="ckpt", checkpoints={"ckpt": weights_digest(local)},
                 task_files={"mine": file_digest(str(task_file))})
    store.set_meta(con, {"identity": json.dumps(ident, sort_keys=True), "fingerprint": fingerprint(ident)})
    con.close()
    assert run_study(load_spec(str(again)), out, quiet=True)["ran"] == 0
    meta = json.loads((local / "config.json").read_text())
    meta["preprocess"]["mean"] = [0.5, 0.5, 0.5]
    (local / "config.json").write_text(json.dumps(meta))
    before = digests(out)
    with pytest.raises(UserError, match=r"holds a different study \(its checkpoints differ"):
        run_study(load_spec(str(again)), out, quiet=True)
    assert digests(out) == before
    assert os.getcwd() == str(tmp_path)


def test_unreachable_budget_and_oversized_data_fail_before_anything_is_written(tiny_checkpoint, tmp_path):
    ckpt, _ = tiny_checkpoint
    bad = write_spec(tmp_path, ckpt, methods={"lora": {"budgets": ["params=50"]}})
    with pytest.raises(UserError, match=r"methods.lora on scenes-caption: lora: no rank reaches 50 parameters"):
        run_study(load_spec(str(bad)), tmp_path / "a", quiet=True)
    big = write_spec(tmp_path, ckpt, name="big.yaml", data_sizes=[10**7])
    with pytest.raises(UserError, match="data_sizes 10000000 on scenes-caption"):
        run_study(load_spec(str(big)), tmp_path / "b", quiet=True)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def _children(pid):
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(p.name))
    return out


def test_killed_worker_fails_its_cell_the_study_goes_on_and_a_rerun_completes(tiny_checkpoint, tmp_path):
    ckpt, _ = tiny_checkpoint
    out = tmp_path / "study"
    spec = write_spec(tmp_path, ckpt, tasks=["easyvqa-vqa"], methods={"lora": {"budgets": [1, 2]}},
                      data_sizes=[16, 32], training={**TRAINING, "steps": 60},
                      executor={"kind": "local", "workers": 2, "threads": 1})
    cmd = [sys.executable, "-m", "vlpeft.cli", "study", str(spec), "--out", str(out)]
    driver = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    victim = None
    deadline = time.time() + 120
    while victim is None and time.time() < deadline:
        time.sleep(0.2)
        if (out / "results.sqlite").exists():
            try:
                running = [r for r in rows(out) if r["status"] == "running"]
            except sqlite3.OperationalError:
                continue
            workers = [
                c for c in _children(driver.pid) if "resource_tracker" not in Path(f"/proc/{c}/cmdline").read_text()
            ]
            if running and workers:
                wait_for(lambda: training_cells(out), 60)  # a worker is in its cell's fine-tuning
                victim = workers[0]
                os.kill(victim, signal.SIGKILL)
    output, _ = driver.communicate(timeout=300)
    assert victim is not None, output
    assert driver.returncode == 1, output  # finished, with failures
    got = rows(out)
    failed = [r for r in got if r["status"] == "failed"]
    assert failed and all("worker process died" in r["reason"] for r in failed)
    assert "FAILED" in output
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    got = rows(out)
    assert len(got) == 4 and {r["status"] for r in got} == {"done"}
    assert all(r["attempts"] >= 1 for r in got)


def test_ray_executor_on_a_local_instance_matches_the_local_executor(tiny_checkpoint, tmp_path):
    ray = pytest.importorskip("ray")
    ckpt, _ = tiny_checkpoint
    spec = write_spec(tmp_path, ckpt, tasks=["easyvqa-vqa"], methods={"lora": {"budgets": [1]}, "frozen": {}},
                      data_sizes=[16], seeds=[0, 1])
    local = run_study(load_spec(str(spec)), tmp_path / "local", quiet=True)
    ray_spec = with_executor(load_spec(str(spec)), kind="ray", threads=1)
    summary = run_study(ray_spec, tmp_path / "ray", quiet=True)
    assert summary["done"] == local["done"] == 4
    assert scores(tmp_path / "ray") == scores(tmp_path / "local")
    assert len(rows(tmp_path / "ray")) == 4
    assert not ray.is_initialized()  # the local instance the study started is shut down


def test_an_unreachable_ray_cluster_is_one_line_and_leaves_nothing(tiny_checkpoint, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ckpt, _ = tiny_checkpoint
    spec = with_executor(load_spec(str(write_spec(tmp_path, ckpt, tasks=["easyvqa-vqa"], methods={"frozen": {}},
                                                  data_sizes=[16]))), kind="ray", address="auto")
    with pytest.raises(UserError, match=r"^executor ray: cannot reach Ray at auto \("):
        run_study(spec, tmp_path / "new" / "out", quiet=True)
    assert not (tmp_path / "new").exists()  # no store, and no empty folder made for it
    (tmp_path / "kept").mkdir()
    with pytest.raises(UserError, match=r"^executor ray: cannot reach Ray"):
        run_study(spec, tmp_path / "kept", quiet=True)
    assert (tmp_path / "kept").is_dir() and not any((tmp_path / "kept").iterdir())  # a folder it did not make stays


def test_local_workers_are_pinned_to_gpus_in_turn(tiny_checkpoint, tmp_path, monkeypatch):
    import queue

    from vlpeft.study import executors

    assert executors.gpu_slots(3, 2) == ["0", "1", "0"] and executors.gpu_slots(2, 0) == [None, None]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    slots = queue.Queue()
    for gpu in ("1", "0"):
        slots.put(gpu)
    monkeypatch.setattr(executors.signal, "signal", lambda *a: None)  # the test process keeps its Ctrl-C
    executors._init_worker(1, slots)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1" and slots.get() == "0"  # the next worker's
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    ckpt, _ = tiny_checkpoint  # a real study: 2 workers spread over 2 (CPU-only here: unused) GPUs
    spec = write_spec(tmp_path, ckpt, tasks=["easyvqa-vqa"], methods={"frozen": {}}, data_sizes=[16, 32],
                      seeds=[0, 1], executor={"kind": "local", "workers": 2, "threads": 1, "gpus": 2})
    assert run_study(load_spec(str(spec)), tmp_path / "out", quiet=True)["done"] == 4
    seen = {json.loads(r["metrics"])["environment"]["cuda_visible_devices"] for r in rows(tmp_path / "out")}
    assert seen <= {"0", "1"} and seen
    with pytest.raises(UserError, match="--gpus 0.5: the local executor pins each worker to one whole GPU"):
        with_executor(load_spec(str(spec)), gpus=0.5)


def test_ray_runs_share_a_gpu_by_fractions(tiny_checkpoint, tmp_path):
    ray = pytest.importorskip("ray")
    ckpt, _ = tiny_checkpoint
    spec = write_spec(tmp_path, ckpt, tasks=["easyvqa-vqa"], methods={"frozen": {}}, data_sizes=[16, 32],
                      seeds=[0, 1])
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:  # one (declared) GPU, four runs asking for half of it each: two at a time, all on that GPU
        summary = run_study(with_executor(load_spec(str(spec)), kind="ray", threads=1, gpus=0.5), tmp_path / "out",
                            quiet=True)
    finally:
        ray.shutdown()
    assert summary["done"] == 4
    seen = {json.loads(r["metrics"])["environment"].get("cuda_visible_devices") for r in rows(tmp_path / "out")}
    assert len(seen) == 1 and None not in seen  # every run was given the same one GPU


@pytest.mark.slow
def test_cli_study_bad_input_is_one_line_exit_2(tmp_path):
    for argv, message in (
        [["study", "quik", "--out", str(tmp_path / "x")], 'did you mean "quick"'],
        [["study", "quick", "--out", str(tmp_path / "x"), "--workers", "-1"], "--workers -1: must be an integer >= 0"],
        [
            ["study", "quick", "--out", str(tmp_path / "x"), "--address", "1.2.3.4:6379"],
            "--address needs --executor ray",
        ],
    ):
        r = subprocess.run([sys.executable, "-m", "vlpeft.cli", *argv], capture_output=True, text=True)
        assert r.returncode == 2, r.stderr
        assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()


def test_a_study_over_coco_caption_and_vqav2_from_one_paths_block_runs(tiny_checkpoint, tmp_path):
    from fixtures_data import write_coco, write_vqav2

    ckpt, _ = tiny_checkpoint
    coco = write_coco(tmp_path / "coco")
    vqa, _ = write_vqav2(tmp_path / "vqa")
    vqa_images = vqa.pop("image_root")
    spec = write_spec(
        tmp_path,
        ckpt,
        tasks=["coco-caption", "vqav2"],
        methods={"lora": {"budgets": [1]}},
        data_sizes=[2],
        paths={**coco, **vqa},  # image_root is COCO's; VQAv2 gets its own below
        task_paths={"vqav2": {"image_root": vqa_images}},
        training={**TRAINING, "batch_size": 2},
        task_training={"coco-caption": {"task_options": {"num_beams": 2}}},
    )
    s = load_spec(str(spec))
    assert s.task_paths_of("coco-caption") == coco and s.task_paths_of("vqav2") == {**vqa, "image_root": vqa_images}
    summary = run_study(s, tmp_path / "study", quiet=True)
    assert summary == {**summary, "total": 2, "done": 2, "failed": 0}
    by_task = {r["task"]: json.loads(r["metrics"]) for r in rows(tmp_path / "study")}
    assert by_task["coco-caption"]["task_options"]["num_beams"] == 2 and by_task["vqav2"]["metric"] == "vqa_accuracy"
    assert by_task["vqav2"]["config"]["paths"]["image_root"] == vqa_images


def test_a_study_over_a_task_file_of_users_data(tiny_checkpoint, tmp_path):
    from fixtures_data import write_user_task

    ckpt, _ = tiny_checkpoint
    task_file = write_user_task(tmp_path / "data", "csv", "vqa", name="my-vqa")
    spec = write_spec(tmp_path, ckpt, tasks=["data/csv-vqa/task.yaml", "easyvqa-vqa"],  # relative to the spec
                      methods={"lora": {"budgets": [1]}}, data_sizes=[8], task_training={"my-vqa": {"steps": 3}})
    s = load_spec(str(spec))
    assert s.tasks == ("my-vqa", "easyvqa-vqa") and s.task_files == {"my-vqa": str(task_file.resolve())}
    summary = run_study(s, tmp_path / "study", quiet=True)
    assert summary["done"] == 2 and summary["failed"] == 0
    got = {r["id"]: r for r in rows(tmp_path / "study")}
    mine = json.loads(got["my-vqa.lora.b1.n8.s0"]["metrics"])
    assert mine["task"] == "my-vqa" and mine["steps_done"] == 3 and mine["task_ref"] == str(task_file.resolve())
    meta = sqlite3.connect(tmp_path / "study" / "results.sqlite").execute(
        "SELECT value FROM meta WHERE key='consistency'").fetchone()
    assert set(json.loads(meta[0])) == {"my-vqa", "easyvqa-vqa"}  # measured for the user's task too
    assert "my-vqa" in (tmp_path / "study" / "report.md").read_text()
    with pytest.raises(UserError, match="tasks lists the task 'my-vqa' twice"):
        load_spec(str(write_spec(tmp_path, ckpt, name="twice.yaml", tasks=["data/csv-vqa/task.yaml", str(task_file)])))


def test_a_study_under_two_training_lengths_runs_each_and_reports_whether_they_agree(tiny_checkpoint, tmp_path):
    ckpt, _ = tiny_checkpoint
    lengths = {"epochs": {"length_policy": "epochs", "epochs": 1}, "steps": {"length_policy": "steps", "steps": 2}}
    out = tmp_path / "study"
    path = write_spec(tmp_path, ckpt, tasks=["easyvqa-vqa"], methods={"lora": {"budgets": [1]}}, lengths=lengths)
    summary = run_study(load_spec(str(path)), out, quiet=True)
    assert summary["done"] == summary["total"] == 4
    got = {r["id"]: r for r in rows(out)}
    steps = {i: json.loads(r["metrics"])["steps"] for i, r in got.items()}
    # equal epochs: one pass, so twice the data takes twice the steps; equal steps: the same at both sizes
    assert steps == {"easyvqa-vqa.lora.b1.n16.s0.Lepochs": 2, "easyvqa-vqa.lora.b1.n32.s0.Lepochs": 4,
                     "easyvqa-vqa.lora.b1.n16.s0.Lsteps": 2, "easyvqa-vqa.lora.b1.n32.s0.Lsteps": 2}
    assert {r["length"] for r in got.values()} == {"epochs", "steps"}
    md = (out / "report.md").read_text()
    assert "## Training length: do the data-size verdicts agree?" in md
    assert "| easyvqa-vqa | lora |" in md and "epochs = epochs: equal epochs: 1 passes" in md
    assert "| easyvqa-vqa | lora@epochs |" in md and "| easyvqa-vqa | lora@steps |" in md  # verdicts per length


def test_too_few_steps_confound_the_data_claims_and_training_to_convergence_does_not(tiny_checkpoint, tmp_path):
    """The same grid twice: at 4 optimiser steps no run has converged and every data-size verdict reads
    `confounded`; under the default policy (train until validation stops improving) the runs converge,
    the verdicts are verdicts, and the length check re-runs its cells twice as long."""
    import csv

    ckpt, _ = tiny_checkpoint
    grid = dict(tasks=["easyvqa-vqa"], methods={"lora": {"budgets": [1, 2, 4]}, "frozen": {}}, seeds=[0, 1])
    short = run_study(load_spec(str(write_spec(tmp_path, ckpt, "short.yaml", **grid))), tmp_path / "short",
                      quiet=True)
    assert short["done"] == short["total"] == 16
    assert {r["converged"] for r in rows(tmp_path / "short") if r["method"] == "lora"} == {0}
    claims = list(csv.DictReader((tmp_path / "short" / "claims.csv").open()))
    assert {r["verdict"] for r in claims if r["claim"] in ("data_trend", "data_flat")} == {"confounded"}
    results = list(csv.DictReader((tmp_path / "short" / "results.csv").open()))
    assert {r["converged"] for r in results} == {"False", "True"}  # a boolean column (the frozen model: True)
    converge = {"length_policy": "converge", "batch_size": 8, "val_limit": 16, "test_limit": 16, "max_steps": 200,
                "eval_every": 4, "patience": 2, "min_steps": 0, "noise_z": 1.0}
    path = write_spec(tmp_path, ckpt, "converge.yaml", training=converge, length_check=2, **grid)
    long = run_study(load_spec(str(path)), tmp_path / "long", quiet=True)
    got = rows(tmp_path / "long")
    checks = [r for r in got if r["length_check"]]
    assert long["done"] == long["total"] == 16 + 2 and len(checks) == 2  # lora's middle budget at both sizes
    assert sorted(r["id"] for r in checks) == ["easyvqa-vqa.lora.b2.n16.s0.x2", "easyvqa-vqa.lora.b2.n32.s0.x2"]
    grid_runs = [r for r in got if not r["length_check"] and r["method"] == "lora"]
    assert all(r["converged"] == 1 for r in grid_runs), [json.loads(r["metrics"])["convergence"] for r in grid_runs]
    by_id = {r["id"]: r for r in got}
    for r in checks:  # at least twice as long as the run it checks, under a cap twice as high, the same warm-up
        config, original = json.loads(r["config"]), json.loads(by_id[r["id"][:-len(".x2")]]["metrics"])
        assert config["min_steps"] == 2 * original["steps_done"] and config["max_steps"] == 400
        assert json.loads(r["metrics"])["steps_done"] >= 2 * original["steps_done"]
        assert config["warmup_steps"] == 1 and config["patience"] == 2
        # it went on from the state its original kept (the same run as from scratch: tests/recipes/test_finetune.py)
        assert json.loads(r["metrics"])["resumed_from_step"] == original["steps_done"]
    kept = sorted(p.parent.name for p in (tmp_path / "long" / "runs").glob("*/state.pt"))
    assert kept == ["easyvqa-vqa.lora.b2.n16.s0", "easyvqa-vqa.lora.b2.n32.s0"]  # the originals only
    claims = list(csv.DictReader((tmp_path / "long" / "claims.csv").open()))
    assert "confounded" not in {r["verdict"] for r in claims if r["claim"] in ("data_trend", "data_flat")} or \
        {r["confounded_by"] for r in claims if r["verdict"] == "confounded"} == {"length check"}
    md = (tmp_path / "long" / "report.md").read_text()
    assert "## Did the runs converge?" in md and "the length check re-ran" in md


def test_the_store_keeps_the_checkpoints_pre_training_record_and_the_report_reads_it_there(tiny_checkpoint,
                                                                                            tmp_path):
    """The study keeps the checkpoint's pretrain.json in its store when it starts or resumes; the
    report shows it from there, with the checkpoint folder gone."""
    import shutil

    from vlpeft import store
    from vlpeft.analysis import report

    ckpt, _ = tiny_checkpoint
    local = tmp_path / "ckpt"
    shutil.copytree(ckpt, local)
    record = json.loads((local / "pretrain.json").read_text())
    spec = write_spec(tmp_path, local, tasks=["easyvqa-vqa"], methods={"frozen": {}}, data_sizes=[16])
    out = tmp_path / "study"
    run_study(load_spec(str(spec)), out, quiet=True)
    assert store.study_meta(out).pretrain == record
    shown = f"| pre-training | {record['steps']:,} steps in "
    assert shown in (out / "report.md").read_text()
    con = sqlite3.connect(out / "results.sqlite")  # as a store made before the record was kept
    con.execute("DELETE FROM meta WHERE key = 'pretrain'")
    con.commit()
    con.close()
    report.build(out)
    assert "| pre-training | – |" in (out / "report.md").read_text()  # no record: as if the checkpoint had none
    assert run_study(load_spec(str(spec)), out, quiet=True)["ran"] == 0  # resuming keeps it again
    assert store.study_meta(out).pretrain == record and shown in (out / "report.md").read_text()
    shutil.rmtree(local)
    (out / "report.md").unlink()
    report.build(out)
    assert shown in (out / "report.md").read_text()


def test_a_store_from_before_lengths_gains_the_column_and_keeps_its_rows(tmp_path):
    from vlpeft import store

    path = tmp_path / "results.sqlite"
    con = sqlite3.connect(path)
    con.executescript(store.SCHEMA.replace(",\n    length TEXT, length_check INTEGER, converged INTEGER\n", "\n"))
    con.execute("INSERT INTO runs (id, task, label, method, data_size, seed, config, status) "
                "VALUES ('a', 't', 'lora', 'lora', '16', 0, '{}', 'pending')")
    con.commit()
    assert "length" not in {r[1] for r in con.execute("PRAGMA table_info(runs)")}
    con.close()
    con = store.connect(path)
    (row,) = store.rows(con)
    assert row["id"] == "a" and row["length"] is None and row["length_check"] is None and row["converged"] is None
    con.close()


def test_cells_of_one_worker_share_the_checkpoint_score_as_fresh_loads_and_leave_it_unchanged(tiny_checkpoint,
                                                                                             tmp_path):
    import torch

    import vlpeft
    from vlpeft.recipes.finetune import FinetuneConfig, finetune
    from vlpeft.study import executors

    ckpt, _ = tiny_checkpoint
    executors._LOADED.pop(str(ckpt), None)
    cells = [("full", None), ("lora", "2"), ("prefix", "2"), ("lora", "2")]  # full first: it trains every weight
    got = []
    for i, (method, budget) in enumerate(cells):
        config = {**TRAINING, "model": str(ckpt), "task": "easyvqa-vqa", "method": method, "budget": budget,
                  "data_size": 16, "seed": 0}
        result = executors.run_cell({"id": str(i), "config": config, "run_dir": str(tmp_path / str(i)), "threads": 1})
        assert result["status"] == "done", result
        got.append(result["metrics"]["test_score"])
        if i == 0:
            alone = finetune(FinetuneConfig(**config, threads=1), None, progress=False, log=lambda *a, **k: None)
            assert alone["test_score"] == got[0]
    assert got[1] == got[3]  # the same cell after others: no state carried over
    pristine = executors._LOADED[str(ckpt)].model.state_dict()
    fresh = vlpeft.load_model(str(ckpt)).model.state_dict()
    assert pristine.keys() == fresh.keys() and all(torch.equal(pristine[k], fresh[k]) for k in fresh)
