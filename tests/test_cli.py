"""End-to-end CLI behaviour on a tiny checkpoint: outputs, and one-line errors with exit code 2."""

import re
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
    """The prompt is fed to the decoder (what follows it is the decoding from [DEC] + prompt, beam 2),
    not only printed in front of a caption decoded without it."""
    from types import SimpleNamespace

    import vlpeft
    from vlpeft.data.records import CaptionExample
    from vlpeft.data.scenes import generate_scenes
    from vlpeft.tasks.captioning import CaptionOptions, predict_captions

    ckpt, _ = tiny_checkpoint
    assert main(["caption", "--model", str(ckpt), "--scenes", "2", "--prompt", "a picture of", "--beams", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    loaded = vlpeft.load_model(str(ckpt))
    scenes = generate_scenes(2, seed=0, split="test")
    images = SimpleNamespace(image={s.scene_id: s.image for s in scenes}.__getitem__)  # the scenes as a task's images
    examples = [CaptionExample(s.scene_id, "", ()) for s in scenes]
    want = predict_captions(loaded.model, examples, images, loaded, CaptionOptions(prompt="a picture of", num_beams=2))
    assert [line.split("\t") for line in lines] == [
        [s.scene_id, f"a picture of {w}".strip()] for s, w in zip(scenes, want)
    ]


def test_debug_flag_shows_the_traceback(tmp_path):
    r = run_cli("--debug", "caption", "--model", tmp_path / "nope", "x.png")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_methods_lists_each_method_with_its_learning_rate_and_exact_counts(tiny_checkpoint, capsys):
    import json

    from vlpeft.model.checkpoint import load_model
    from vlpeft.peft import REGISTRY, apply_peft, count_params, make_config

    ckpt, _ = tiny_checkpoint
    assert main(["methods", "--model", str(ckpt), "--json"]) == 0
    table = json.loads(capsys.readouterr().out)["methods"]
    assert list(table) == list(REGISTRY)
    assert {name: row["default_lr"] for name, row in table.items()} == {n: s.default_lr for n, s in REGISTRY.items()}
    row = table["lora"]["ladder"][1]  # a listed budget is what applying that knob value trains
    model = load_model(str(ckpt)).model
    apply_peft(
        model, "lora", make_config("lora", {"rank": row["value"], "placement": table["lora"]["default_placement"]})
    )
    assert row["budget"] == count_params(model)["budget"]
    assert main(["methods", "--model", str(ckpt), "--method", "prompt"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-2:] == ["lr", "placement"] and all(line.split()[-2] == "0.01" for line in lines[1:])


def test_finetune_flags_come_from_the_config_fields():
    """A new FinetuneConfig field gets its --flag, type, choices and help without touching the CLI."""
    import dataclasses

    from vlpeft.cli import build_parser
    from vlpeft.recipes.config import FinetuneConfig

    parser = build_parser()
    finetune = next(a for a in parser._actions if a.dest == "command").choices["finetune"]
    actions = {a.dest: a for a in finetune._actions}
    for f in dataclasses.fields(FinetuneConfig):
        if f.name in ("method_options", "task_options", "paths"):  # --options JSON, --task-option, --data
            continue
        action = actions[f.name]
        if f.name != "data_size":  # parsed by FinetuneConfig from a string: "0.1", "10%", "200"
            assert action.help.startswith(f.metadata["help"].replace("%", "%%")), f.name
            assert action.choices == f.metadata.get("choices"), f.name
            assert action.required == (f.name in ("model", "task", "method")), f.name
    args = parser.parse_args(["finetune", "--model", "m", "--task", "t", "--method", "lora", "--out", "o",
                              "--no-feature-cache", "--lr", "3e-4", "--scene-seed", "5"])
    assert (args.feature_cache, args.lr, args.scene_seed, args.seed) == (False, 3e-4, 5, None)


def test_pretrain_flags_come_from_the_config_fields_and_its_ranges_from_their_metadata():
    """Every PretrainConfig field is a --flag with its help; a value out of a field's range is refused by
    the rule written in the field's metadata, the one check of the command line and of Python."""
    import dataclasses

    from vlpeft.cli import build_parser
    from vlpeft.errors import UserError
    from vlpeft.recipes.config import PretrainConfig

    parser = build_parser()
    pretrain = next(a for a in parser._actions if a.dest == "command").choices["pretrain"]
    actions = {a.dest: a for a in pretrain._actions}
    for f in dataclasses.fields(PretrainConfig):
        assert actions[f.name].help.startswith(f.metadata["help"].replace("%", "%%")), f.name
    args = parser.parse_args(["pretrain", "--out", "o", "--lr", "3e-4", "--no-text-lm-reads-encoder", "--steps", "9"])
    assert (args.lr, args.text_lm_reads_encoder, args.steps, args.seed) == (3e-4, False, 9, None)
    for field, bad, needle in [("steps", 0, "pretrain: steps must be positive, got 0"),
                               ("lr", 0.0, "pretrain: lr must be a finite number > 0, got 0.0"),
                               ("single_object_fraction", 1.5, "must be a finite number >= 0 and <= 1, got 1.5"),
                               ("threads", -1, "threads must be an integer >= 0, got -1")]:
        with pytest.raises(UserError, match=re.escape(needle)):
            PretrainConfig(**{field: bad})


def test_finetune_prints_a_summary_naming_the_knob_only_where_there_is_one_and_convergence(tiny_checkpoint, tmp_path,
                                                                                             capsys):
    ckpt, _ = tiny_checkpoint
    common = ["--model", str(ckpt), "--task", "easyvqa-vqa", "--data-size", "16", "--length-policy", "steps",
              "--steps", "1", "--evals", "1", "--val-limit", "8", "--test-limit", "8", "--quiet"]
    assert main(["finetune", *common, "--method", "lora", "--budget", "2", "--out", str(tmp_path / "lora")]) == 0
    assert main(["finetune", *common, "--method", "bitfit", "--out", str(tmp_path / "bitfit")]) == 0
    lora, lora_conv, bitfit, bitfit_conv = capsys.readouterr().out.strip().splitlines()
    # one evaluation after step 0 is too few to judge, and a fixed length says so
    assert lora_conv.startswith("  NOT converged: too few evaluations to judge (a fixed length); best validation")
    assert bitfit_conv.startswith("  NOT converged")
    assert lora.startswith("easyvqa-vqa lora rank=2 data=16 seed=0: test vqa_accuracy ")
    assert bitfit.startswith("easyvqa-vqa bitfit data=16 seed=0: test vqa_accuracy ")
    assert lora.endswith(f"-> {tmp_path / 'lora'}") and "None" not in bitfit


def test_a_run_folder_is_one_finetune_wrote_or_began(tmp_path):
    """A run that failed after logging to TensorBoard leaves only its events: finetune may write there
    again. A folder holding anything else is not a run folder (finetune refuses to write into it)."""
    from vlpeft.cli import is_run_folder

    began = tmp_path / "began"
    began.mkdir()
    (began / "events.out.tfevents.1.host.1.0").write_bytes(b"")
    assert is_run_folder(began)
    (began / "notes.txt").write_text("mine")
    assert not is_run_folder(began)
    (tmp_path / "empty").mkdir()
    assert not is_run_folder(tmp_path / "empty")
