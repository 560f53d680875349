"""Using a run on one's own images: `vlpeft caption --peft`, `vlpeft answer`, their batch form, and
the Python functions behind them give what evaluation predicts for the same examples."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import vlpeft
from vlpeft.cli import main
from vlpeft.errors import UserError
from vlpeft.peft import load_peft
from vlpeft.recipes import infer
from vlpeft.recipes.finetune import FinetuneConfig, finetune
from vlpeft.recipes.prepare import prepare

FAST = dict(length_policy="steps", steps=6, batch_size=16, val_limit=20, test_limit=12, evals=1, data_size=64)


@pytest.fixture(scope="module")
def runs(tiny_checkpoint, tmp_path_factory):
    """A VQA run and a caption run on the tiny checkpoint, and their first test examples saved as PNG
    files (lossless: the files decode to the pixels evaluation saw)."""
    ckpt, _ = tiny_checkpoint
    root = tmp_path_factory.mktemp("infer")
    out = {}
    for name, task, method in (("vqa", "easyvqa-vqa", "lora"), ("caption", "scenes-caption", "prefix")):
        cfg = FinetuneConfig(model=str(ckpt), task=task, method=method, **FAST)
        finetune(cfg, root / name, progress=False)
        prep = prepare(cfg)
        examples = prep.test[:6]
        files = []
        for ex in examples:
            path = root / f"{name}-{ex.image_id}.png"
            Image.fromarray(np.asarray(prep.data.image(ex.image_id))).save(path)
            files.append(str(path))
        fresh = vlpeft.load_model(str(ckpt))
        load_peft(fresh.model, root / name)
        fresh.model.eval()
        want = prep.kind.predict(fresh.model, examples, prep.data, fresh, prep.options, cfg.max_text_len)
        out[name] = dict(run=root / name, examples=examples, files=files, want=want)
    return str(ckpt), root, out


def test_a_run_predicts_what_evaluation_predicts(runs):
    ckpt, _, r = runs
    vqa = r["vqa"]
    p = infer.predictor(ckpt, "vqa", run=vqa["run"])
    assert p.options.inference == "rank" and len(p.answers) > 1  # the run's settings and its task's answers
    assert infer.predict(p, vqa["files"], [ex.question for ex in vqa["examples"]]) == vqa["want"]
    cap = r["caption"]
    p = infer.predictor(ckpt, "caption", run=cap["run"])
    assert infer.predict(p, cap["files"]) == cap["want"]
    assert p.run == str(cap["run"]) and infer.predictor(ckpt, "caption").run is None


def test_answer_and_caption_commands_single_and_batch(runs, tmp_path, capsys):
    ckpt, _, r = runs
    vqa, cap = r["vqa"], r["caption"]
    assert main(["answer", "--model", ckpt, "--peft", str(vqa["run"]), vqa["files"][0],
                 vqa["examples"][0].question]) == 0
    assert capsys.readouterr().out.strip() == vqa["want"][0]
    assert main(["caption", "--model", ckpt, "--peft", str(cap["run"]), *cap["files"]]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t") for line in lines] == [[f, w] for f, w in zip(cap["files"], cap["want"])]
    # batch: paths relative to the input file, other keys carried through, one output line per input line
    for f in vqa["files"]:
        shutil.copy(f, tmp_path)
    inp = tmp_path / "questions.jsonl"
    inp.write_text("".join(json.dumps({"id": i, "image": f.rsplit("/", 1)[1], "question": ex.question}) + "\n"
                           for i, (f, ex) in enumerate(zip(vqa["files"], vqa["examples"]))))
    out = tmp_path / "answers.jsonl"
    assert main(["answer", "--model", ckpt, "--peft", str(vqa["run"]), "--input", str(inp), "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["id"] for row in rows] == list(range(len(vqa["files"])))
    assert [row["answer"] for row in rows] == vqa["want"]
    cap_in = tmp_path / "images.jsonl"
    cap_in.write_text("".join(json.dumps({"image": f}) + "\n" for f in cap["files"]))
    assert main(["caption", "--model", ckpt, "--peft", str(cap["run"]), "--input", str(cap_in)]) == 0
    assert [json.loads(line)["caption"] for line in capsys.readouterr().out.splitlines()] == cap["want"]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "vlpeft.cli", *map(str, args)], capture_output=True, text=True)


def test_bad_input_is_one_line_and_writes_nothing(runs, tmp_path):
    ckpt, _, r = runs
    vqa, cap = r["vqa"], r["caption"]
    good = json.dumps({"image": vqa["files"][0], "question": "what shape?"})
    out = tmp_path / "out.jsonl"
    cases = [
        ([good, '{"image": "nowhere.png", "question": "what?"}'], "line 2: image 'nowhere.png' not found"),
        ([good, '{"image": "x.png"}'], "line 2: needs a 'question' (text), got null"),
        ([good, "{not json"], "line 2: not valid JSON"),
    ]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    cases.append(([good, json.dumps({"image": str(broken), "question": "what?"})], "line 2: "))
    for lines, message in cases:
        inp = tmp_path / "in.jsonl"
        inp.write_text("\n".join(lines) + "\n")
        res = cli("answer", "--model", ckpt, "--peft", vqa["run"], "--input", inp, "--output", out)
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert message in res.stderr and str(inp) in res.stderr and not out.exists(), res.stderr
    res = cli("answer", "--model", ckpt, "--peft", cap["run"], vqa["files"][0], "what?")
    assert res.returncode == 2 and "trained for caption (scenes-caption); use `vlpeft caption`" in res.stderr
    res = cli("caption", "--model", ckpt, "--peft", vqa["run"], vqa["files"][0])
    assert res.returncode == 2 and "use `vlpeft answer`" in res.stderr
    res = cli("answer", "--model", ckpt, "--peft", tmp_path / "no-run", vqa["files"][0], "what?")
    assert res.returncode == 2 and "no such run folder" in res.stderr
    res = cli("answer", "--model", ckpt, vqa["files"][0])
    assert res.returncode == 2 and 'give IMAGE "QUESTION" or --input' in res.stderr
    res = cli("caption", "--model", ckpt, "--output", out, vqa["files"][0])
    assert res.returncode == 2 and "goes with --input" in res.stderr


def test_a_run_is_used_only_on_the_checkpoint_it_adapted(runs, tmp_path):
    from fixtures_data import altered_checkpoint

    ckpt, _, r = runs
    other = altered_checkpoint(ckpt, tmp_path / "other")
    with pytest.raises(UserError, match=r"this run adapted .*--allow-other-base to use this one anyway"):
        infer.predictor(str(other), "vqa", run=r["vqa"]["run"])
    assert infer.predictor(str(other), "vqa", run=r["vqa"]["run"], allow_other_base=True).run is not None


def test_the_checkpoint_alone_ranks_a_tasks_answers_or_generates(runs):
    ckpt, _, r = runs
    vqa = r["vqa"]
    ranked = infer.predictor(ckpt, "vqa", task="easyvqa-vqa")
    assert ranked.options.inference == "rank" and set(ranked.answers) >= set(vqa["want"])
    answers = infer.predict(ranked, vqa["files"][:2], ["what shape is this?"] * 2)
    assert all(a in ranked.answers for a in answers)
    free = infer.predictor(ckpt, "vqa")
    assert free.options.inference == "generate" and free.answers == ()
    assert all(isinstance(a, str) for a in infer.predict(free, vqa["files"][:1], ["what color?"]))
    with pytest.raises(UserError, match="scenes-caption is a caption task, not vqa"):
        infer.predictor(ckpt, "vqa", task="scenes-caption")
