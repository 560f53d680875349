"""One honest fine-tuning run on the tiny checkpoint: files, records, reproducibility, bad input."""

import json
import shutil
import subprocess
import sys

import pytest

from vlpeft.errors import UserError
from vlpeft.recipes.evaluate import evaluate_run
from vlpeft.recipes.finetune import FinetuneConfig, finetune
from vlpeft.recipes.length import eval_steps, stop_floor, train_steps

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
    assert [row["step"] for row in curve] == [0, 3, 6]  # step 0: the starting model is a candidate too
    assert on_disk["converged"] is False and on_disk["convergence"]["state"] == "too_short"  # 3 evaluations
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


# Golden values: the session fixture checkpoint, fp32 on the CPU, measured at commit 6d745f9 and unchanged since.
# A loss may move by float rounding across CPUs and thread counts (1e-4 relative); a CIDEr-D score only by a
# decoded token changing, which these tolerances do not allow. A change of numerics that stays deterministic
# (an init, a schedule, a data order, a scoring rule) moves them far more and fails here.
GOLDEN = {
    ("scenes-caption", "lora", "8"): (3.5297563870747886, 3.4794981479644775, 0.17999975404479585),
    ("easyvqa-vqa", "lora", "4"): (4.504757086435954, 4.470966815948486, 0.0),
    ("scenes-caption", "prefix", "4"): (3.536463181177775, 3.4880236784617105, 0.26176986019874815),
}


@pytest.mark.parametrize("task,method,budget", list(GOLDEN))
def test_a_six_step_run_gives_its_golden_losses_and_score(task, method, budget, tiny_checkpoint, tmp_path):
    ckpt, _ = tiny_checkpoint
    m = run(ckpt, tmp_path / "run", task=task, method=method, budget=budget, data_size=64)
    losses = [row["loss"] for row in json.loads((tmp_path / "run" / "curve.json").read_text())[1:]]
    first, last, score = GOLDEN[task, method, budget]
    assert len(losses) == 2 and m["steps"] == 6
    assert losses[0] == pytest.approx(first, rel=1e-4) and losses[-1] == pytest.approx(last, rel=1e-4)
    assert m["test_score"] == pytest.approx(score, abs=1e-6)


def test_a_compiled_run_trains_as_the_eager_one(tiny_checkpoint, tmp_path):
    """`compile: on` (torch.compile of the loss, dynamic shapes) gives the golden run's losses and score
    to float rounding (kernels fuse and reorder sums); `auto` compiles nowhere yet (COMPILE_PAYS)."""
    ckpt, _ = tiny_checkpoint
    m = run(ckpt, tmp_path / "run", task="easyvqa-vqa", method="lora", budget="4", data_size=64, compile="on")
    losses = [row["loss"] for row in json.loads((tmp_path / "run" / "curve.json").read_text())[1:]]
    first, last, score = GOLDEN["easyvqa-vqa", "lora", "4"]
    assert m["compiled"] is True and m["config"]["compile"] == "on"
    assert losses[0] == pytest.approx(first, rel=1e-4) and losses[-1] == pytest.approx(last, rel=1e-4)
    assert m["test_score"] == pytest.approx(score, abs=1e-6)
    plain = run(ckpt, None, data_size=16, steps=1)
    assert plain["compiled"] is False and plain["config"]["compile"] == "auto"
    with pytest.raises(UserError, match="compile 'yes'"):
        FinetuneConfig(model=str(ckpt), task="easyvqa-vqa", method="lora", compile="yes")


def test_bf16_autocast_trains_close_to_fp32(tiny_checkpoint, tmp_path):
    ckpt, _ = tiny_checkpoint
    auto = run(ckpt, tmp_path / "fp32", data_size=40, seed=3)  # the default, auto: fp32 on a CPU
    bf16 = run(ckpt, tmp_path / "bf16", data_size=40, seed=3, precision="bf16")
    assert (auto["config"]["precision"], auto["precision"]) == ("auto", "fp32")
    assert (bf16["config"]["precision"], bf16["precision"]) == ("bf16", "bf16")
    # Not bit-equal (matmuls round to 8 mantissa bits), but the same training to within rounding.
    loss = {p: json.loads((tmp_path / p / "curve.json").read_text())[1]["loss"] for p in ("fp32", "bf16")}
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
    def cfg(**kw):
        return FinetuneConfig(model="m", task="easyvqa-vqa", method="lora", batch_size=10, **kw)
    assert FinetuneConfig(model="m", task="t", method="lora").length_policy == "converge"  # the default
    assert train_steps(cfg(max_steps=500), 95) == 500  # converge: the cap
    assert train_steps(cfg(max_steps=500, max_epochs=3), 95) == 30  # the smaller cap
    assert eval_steps(cfg(eval_every=50), 230) == [50, 100, 150, 200, 230]
    assert eval_steps(cfg(eval_every=50, eval_growth=1.5), 800) == [50, 100, 150, 225, 338, 507, 760, 800]
    assert eval_steps(cfg(length_policy="steps", steps=10, evals=2), 10) == [5, 10]
    assert train_steps(cfg(length_policy="epochs", epochs=3), 95) == 30
    assert train_steps(cfg(length_policy="steps", steps=7), 95) == 7
    assert train_steps(cfg(length_policy="epochs_min_steps", epochs=3, min_steps=50), 95) == 50
    assert train_steps(cfg(length_policy="epochs_min_steps", epochs=3, min_steps=5), 95) == 30
    # converge's floor: min_steps, or min_epochs passes over the subset when that is later
    assert stop_floor(cfg(min_steps=200, min_epochs=40), 40) == 200  # 4 steps a pass: 160 < 200
    assert stop_floor(cfg(min_steps=200, min_epochs=40), 250) == 1000  # 25 steps a pass
    assert stop_floor(cfg(min_steps=200, min_epochs=40), 995) == 2000  # 4,000 steps of passes: half the cap
    assert stop_floor(cfg(min_steps=200, min_epochs=40, max_epochs=10), 995) == 500  # the cap: 10 passes
    assert stop_floor(cfg(min_steps=200, min_epochs=0), 995) == 200


CONVERGE = dict(length_policy="converge", batch_size=16, val_limit=40, test_limit=30, min_steps=0, min_epochs=0,
                eval_growth=1.0)


def test_early_stopping_keeps_the_best_weights_and_records_convergence(tiny_checkpoint, tmp_path):
    """Stopped by the rule: the saved weights are the best evaluation's (re-evaluated on validation they
    give the recorded best score), and the record says when, why and from what evidence."""
    import torch

    from vlpeft.peft import load_peft
    from vlpeft.recipes.prepare import prepare
    from vlpeft.recipes.step import evaluate_split

    ckpt, _ = tiny_checkpoint
    cfg = FinetuneConfig(model=str(ckpt), task="easyvqa-vqa", method="lora", budget="4", data_size=64,
                         max_steps=60, eval_every=5, patience=3, lr=3e-3, **CONVERGE)
    m = finetune(cfg, tmp_path / "run", progress=False)
    curve = json.loads((tmp_path / "run" / "curve.json").read_text())
    assert [r["step"] for r in curve] == list(range(0, m["steps_done"] + 1, 5))
    best = max(curve, key=lambda r: r["val_score"])
    assert m["steps_to_best"] == best["step"] and m["best_val_score"] == best["val_score"]
    assert m["convergence"]["state"] in ("converged", "still_improving", "flat_at_start")
    assert m["converged"] == (m["convergence"]["state"] == "converged")
    assert m["stopped_by"] == ("converged" if m["steps_done"] < 60 else "cap")
    if m["stopped_by"] == "converged":  # never before twice the step of the best evaluation (patience_ratio)
        assert m["steps_done"] >= 2 * m["steps_to_best"]
    assert m["convergence"]["plateau_step"] <= m["steps_to_best"]
    for r in curve:  # the score's own noise at every evaluation: the binomial standard error (exact match)
        p = r["val_score"] / 100
        assert r["val_se"] == pytest.approx(100 * (p * (1 - p) / (40 - 1)) ** 0.5, rel=1e-6)
    prep = prepare(cfg)
    load_peft(prep.loaded.model, tmp_path / "run")
    torch.manual_seed(0)
    again = evaluate_split(prep, cfg, prep.loaded.model, prep.val)["score"]
    assert again == pytest.approx(m["best_val_score"], abs=1e-9)


def test_a_run_that_only_hurts_validation_keeps_its_starting_weights(tiny_checkpoint, tmp_path):
    """A learning rate far too high: every evaluation after step 0 is worse, so the rule stops as soon as
    it can judge (two windows of `patience` evaluations) and the run keeps (and scores) the model it
    started from."""
    ckpt, _ = tiny_checkpoint
    frozen = run(ckpt, None, task="scenes-caption", method="frozen", data_size=64, val_limit=40, test_limit=30)
    m = run(ckpt, tmp_path / "run", task="scenes-caption", method="lora", budget="8", data_size=64, lr=0.5,
            **{**CONVERGE, "max_steps": 40, "eval_every": 4, "patience": 2, "noise_z": 0.0})
    assert m["steps_to_best"] == 0 and m["stopped_by"] == "converged" and m["steps_done"] == 16  # 2 windows of 2
    assert m["best_val_score"] == frozen["best_val_score"] and m["test_score"] == frozen["test_score"]
    assert m["converged"] is True and frozen["converged"] is True and frozen["convergence"]["state"] == "not_trained"
    # the same run with a floor of 6 passes over its 64 examples (4 steps each), under half its cap of 60:
    # judged converged at step 16 as before, but not stopped before step 24
    floored = run(ckpt, None, task="scenes-caption", method="lora", budget="8", data_size=64, lr=0.5,
                  **{**CONVERGE, "max_steps": 60, "eval_every": 4, "patience": 2, "noise_z": 0.0, "min_epochs": 6})
    assert floored["stopped_by"] == "converged" and floored["steps_done"] == 24 and floored["steps_to_best"] == 0


def test_a_longer_run_goes_on_from_a_shorter_runs_state_and_is_the_run_trained_from_scratch(
        tiny_checkpoint, tmp_path, monkeypatch):
    """The length check's saving: a run that keeps its state, then the same cell with a higher floor and
    cap resumed from it, gives the curve, weights and scores of that longer cell trained from scratch,
    computing only the steps after the shorter run's stop. A state that does not fit is not used."""
    import dataclasses

    import vlpeft.recipes.finetune as ft

    ckpt, _ = tiny_checkpoint
    short = FinetuneConfig(model=str(ckpt), task="easyvqa-vqa", method="lora", budget="4", data_size=64, lr=3e-3,
                           max_steps=40, eval_every=5, patience=2, **{**CONVERGE, "noise_z": 0.0})
    first = finetune(short, tmp_path / "short", progress=False, keep_state=True)
    assert first["stopped_by"] == "converged" and (tmp_path / "short" / "state.pt").is_file()
    from vlpeft.study.runner import lengthened  # as the study's length check lengthens a cell

    longer = FinetuneConfig(**lengthened(dataclasses.asdict(short), 2, first))
    assert longer.min_steps == 2 * first["steps_done"] and longer.max_steps == 80
    steps = []
    real_step = ft.train_step
    monkeypatch.setattr(ft, "train_step", lambda *a, **k: steps.append(1) or real_step(*a, **k))
    scratch = finetune(longer, tmp_path / "scratch", progress=False)
    n_scratch, steps[:] = len(steps), []
    resumed = finetune(longer, tmp_path / "resumed", progress=False, resume=tmp_path / "short")
    assert len(steps) == n_scratch - first["steps_done"] > 0  # only the steps after the shorter run's stop
    def curve(run):  # every figure but the clock
        return [{k: v for k, v in r.items() if k != "seconds"} for r in json.loads((tmp_path / run / "curve.json")
                                                                                     .read_text())]
    assert curve("resumed") == curve("scratch") and len(curve("scratch")) > len(curve("short"))
    for key in ("test_score", "best_val_score", "steps_done", "steps_to_best", "converged", "stopped_by"):
        assert resumed[key] == scratch[key], key
    assert resumed["resumed_from_step"] == first["steps_done"] and scratch["resumed_from_step"] is None
    assert (tmp_path / "resumed" / "peft_model.safetensors").read_bytes() == \
        (tmp_path / "scratch" / "peft_model.safetensors").read_bytes()
    assert not (tmp_path / "resumed" / "state.pt").exists()  # kept only when asked
    # not resumed: another learning rate, another policy, no state, another evaluation schedule
    assert ft.resumable(dataclasses.replace(longer, lr=1e-3), tmp_path / "short") is None
    assert ft.resumable(dataclasses.replace(longer, length_policy="steps", steps=80), tmp_path / "short") is None
    assert ft.resumable(longer, tmp_path / "scratch") is None  # no state there
    steps[:] = []
    odd = finetune(dataclasses.replace(longer, eval_every=7), None, progress=False, resume=tmp_path / "short")
    assert len(steps) == odd["steps_done"]  # trained from scratch


def cli(*args):
    return subprocess.run([sys.executable, "-m", "vlpeft.cli", *map(str, args)], capture_output=True, text=True)


def test_peak_memory_is_measured_per_run():
    import torch

    from vlpeft.recipes.record import peak_memory_mb, reset_peak_memory

    cpu = torch.device("cpu")
    big = torch.ones(64 * 2**20)  # 256 MiB
    before = peak_memory_mb(cpu)
    del big
    reset_peak_memory(cpu)  # a new window: the earlier peak no longer counts
    assert 0 < peak_memory_mb(cpu) < before - 128


# ---------------------------------------------------------------------------------------------
# Users' own data, COCO / VQAv2 files, devices


from fixtures_data import USER_FORMATS, write_coco, write_task_file, write_user_task, write_vqav2  # noqa: E402

USER_CASES = [(f, k) for f in USER_FORMATS for k in ("caption", "vqa")] + [
    ("coco-karpathy", "caption"),
    ("vqav2", "vqa"),
]


def official_task_file(tmp_path, fmt):
    if fmt == "coco-karpathy":
        paths = write_coco(tmp_path / "c")
        return write_task_file(tmp_path / "t.yaml", name="mine-coco", kind="caption", format=fmt,
                               path=paths["karpathy_json"], image_root=paths["image_root"])
    write_vqav2(tmp_path / "v")
    return write_task_file(
        tmp_path / "t.yaml", name="mine-vqav2", kind="vqa", format=fmt, path="v", image_root="v/images"
    )


@pytest.mark.parametrize("fmt,kind", USER_CASES, ids=[f"{f}-{k}" for f, k in USER_CASES])
def test_a_task_file_in_each_format_fine_tunes_and_scores_end_to_end(fmt, kind, tiny_checkpoint, tmp_path,
                                                                     monkeypatch):
    ckpt, _ = tiny_checkpoint
    task_file = write_user_task(tmp_path, fmt, kind) if fmt in USER_FORMATS else official_task_file(tmp_path, fmt)
    m = run(ckpt, tmp_path / "run", task=str(task_file), steps=2, evals=1, batch_size=4)
    assert m["task"].startswith("mine-") and m["task_ref"] == str(task_file.resolve()) and m["task_kind"] == kind
    assert m["metric"] == ("cider_d" if kind == "caption" else "vqa_accuracy") and m["steps_done"] == 2
    assert m["data_size"] == m["train_pool"] > 0 and m["task_details"]["sizes"]["train"]["examples"] == m["train_pool"]
    if kind == "vqa":
        assert "majority_baseline" in m["secondary"] and m["task_options"]["inference"] == "rank"
    assert (tmp_path / "run" / "peft_model.safetensors").is_file()
    assert evaluate_run(str(ckpt), tmp_path / "run", str(task_file))["test_score"] == m["test_score"]
    if fmt == "vqav2":  # the run's task named as a user would: the file from its folder, or the task's name
        monkeypatch.chdir(task_file.parent)
        for ref in (task_file.name, m["task"]):
            assert evaluate_run(str(ckpt), tmp_path / "run", ref)["test_score"] == m["test_score"]
        moved = tmp_path.with_name(tmp_path.name + "-moved")  # data, task file and run moved: scored there
        shutil.copytree(tmp_path, moved)
        assert evaluate_run(str(ckpt), moved / "run", str(moved / "t.yaml"))["test_score"] == m["test_score"]
        (moved / "other.yaml").write_text(task_file.read_text().replace("mine-vqav2", "other-vqa"))
        with pytest.raises(UserError, match=r"this run was trained on 'mine-vqav2', not 'other-vqa' \(.*other.yaml\)"):
            evaluate_run(str(ckpt), moved / "run", str(moved / "other.yaml"))


def test_coco_caption_takes_its_files_from_the_command_line(tiny_checkpoint, tmp_path):
    ckpt, _ = tiny_checkpoint
    paths = write_coco(tmp_path)
    r = cli("finetune", "--model", ckpt, "--task", "coco-caption", "--method", "lora", "--out", tmp_path / "run",
            "--data", f"karpathy_json={paths['karpathy_json']}", "--data", f"image_root={paths['image_root']}",
            "--task-option", "num_beams=2", "--length-policy", "steps", "--steps", "2", "--batch-size", "2", "--quiet")
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["task"] == "coco-caption" and m["config"]["paths"] == paths
    assert m["task_options"] == {"prompt": "a picture of", "num_beams": 2, "max_new_tokens": 30}  # COCO's prompt kept
    r = cli("finetune", "--model", ckpt, "--task", "coco-caption", "--method", "lora", "--out", tmp_path / "run2",
            "--data", "karpathy_json", "--steps", "2")
    assert r.returncode == 2 and "--data 'karpathy_json': expected KEY=PATH" in r.stderr


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("task", ["scenes-caption", "easyvqa-vqa"])
def test_each_task_kind_fine_tunes_and_evaluates_on_cuda(task, tiny_checkpoint, tmp_path):
    ckpt, _ = tiny_checkpoint
    m = run(ckpt, tmp_path / "run", task=task, data_size=64, device="cuda", precision="bf16")
    assert m["environment"]["device"].startswith("cuda") and m["steps_done"] == FAST["steps"]
    cpu = evaluate_run(
        str(ckpt), tmp_path / "run", task
    )  # the same weights re-scored: the device is part of the config
    assert cpu["test_score"] == pytest.approx(m["test_score"])


def test_a_run_is_re_scored_only_on_the_checkpoint_it_adapted(tiny_checkpoint, tmp_path):
    import os
    import shutil


    ckpt, _ = tiny_checkpoint
    m = run(ckpt, tmp_path / "run", data_size=16, steps=2, evals=1)
    assert len(m["base_model_digest"]) == 16
    peft_config = json.loads((tmp_path / "run" / "peft_config.json").read_text())
    assert peft_config["base_model_digest"] == m["base_model_digest"]
    for name in ("metrics.json", "peft_model.safetensors", "peft_config.json"):  # every run file 0644 (umask 022)
        assert oct(os.stat(tmp_path / "run" / name).st_mode & 0o777) == oct(0o666 & ~_umask())
    from fixtures_data import altered_checkpoint

    other = altered_checkpoint(ckpt, tmp_path / "other")
    with pytest.raises(
        UserError, match=r"this run adapted .* \(checkpoint [0-9a-f]{16}\), not .*other \(checkpoint [0-9a-f]{16}: "
                         r"its weights, config, tokenizer or preprocessing differ\)"
    ):
        evaluate_run(str(other), tmp_path / "run")
    anyway = evaluate_run(str(other), tmp_path / "run", allow_other_base=True)
    assert anyway["same_base"] is False
    assert evaluate_run(str(ckpt), tmp_path / "run")["same_base"] is True
    # the same weights with another preprocessing give other scores: not the run's base either
    edited = tmp_path / "edited"
    shutil.copytree(ckpt, edited)
    meta = json.loads((edited / "config.json").read_text())
    meta["preprocess"]["mean"] = [0.1, 0.9, 0.5]
    (edited / "config.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match=r"not .*edited \(checkpoint"):
        evaluate_run(str(edited), tmp_path / "run")
    # a record written before the digest covered the settings holds the weights' digest: still its base
    from vlpeft.model.checkpoint import weights_digest

    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    record["base_model_digest"] = weights_digest(ckpt)
    (tmp_path / "run" / "metrics.json").write_text(json.dumps(record))
    assert evaluate_run(str(ckpt), tmp_path / "run")["same_base"] is True


def test_a_run_is_re_scored_only_on_the_task_data_it_was_trained_on(tiny_checkpoint, tmp_path):
    from fixtures_data import write_user_task

    ckpt, _ = tiny_checkpoint
    task_file = write_user_task(tmp_path, "jsonl", "vqa", name="mine")
    m = run(ckpt, tmp_path / "run", task=str(task_file), steps=2, evals=1, batch_size=4)
    assert len(m["task_data_digest"]) == 16
    assert evaluate_run(str(ckpt), tmp_path / "run")["test_score"] == m["test_score"]
    data = task_file.parent / "data.jsonl"
    data.write_text(data.read_text().replace('"answers": ["', '"answers": ["no", "', 1))
    with pytest.raises(UserError, match=r"run: the records of task mine changed since this run was trained \(data "
                                        r"[0-9a-f]{16}, now [0-9a-f]{16}\)"):
        evaluate_run(str(ckpt), tmp_path / "run")


def test_a_scenes_run_is_re_scored_on_its_recorded_scenes(tiny_checkpoint, tmp_path):
    """The scene seed comes from the checkpoint's pretrain.json at training time; re-scoring uses the
    run's recorded seed, so an edited pretrain.json cannot change the test set under it."""
    import shutil

    ckpt, _ = tiny_checkpoint
    m = run(ckpt, tmp_path / "run", task="scenes-caption", data_size=16, steps=2, evals=1)
    copy = tmp_path / "ckpt"
    shutil.copytree(ckpt, copy)
    pre = json.loads((copy / "pretrain.json").read_text())
    pre["seed"] = pre.get("seed", 0) + 1
    (copy / "pretrain.json").write_text(json.dumps(pre))
    assert evaluate_run(str(copy), tmp_path / "run")["test_score"] == m["test_score"]


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask
