"""The README is a page for users: short, its Python example runs as written, and every relative link
in it and in docs/ points at a file (and a heading) that exists."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 250
EXAMPLE_CHECKPOINT = '"tiny"'  # what the README's example loads: the checkpoint shipped with vlpeft


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_readme_is_at_most_250_lines():
    lines = len(read(README).splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move the detail into docs/"


def python_example() -> str:
    """The first ```python block of the README."""
    m = re.search(r"^```python\n(.*?)^```", read(README), re.S | re.M)
    assert m, "README.md has no ```python block"
    return m.group(1)


def test_the_python_example_runs_as_written_and_its_peft_weights_reload(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from vlpeft.peft import count_params

    code = python_example()
    assert EXAMPLE_CHECKPOINT in code, "the example should load the checkpoint shipped with vlpeft, tiny"
    for quick in ('length_policy="steps"', "steps=4", "data_size=16", "val_limit=16", "test_limit=16"):
        assert quick in code, f"the example's fine-tuning should stay a quick try ({quick})"
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme_example"}
    exec(compile(code, "README.md, the Python example", "exec"), namespace)  # noqa: S102

    run = tmp_path / "runs" / "try-lora"
    metrics = json.loads(read(run / "metrics.json"))
    assert metrics["method"] == "lora" and metrics["knob_value"] == 8
    assert metrics["data_size"] == 16 and metrics["steps_done"] == 4
    assert 0.0 <= metrics["test_score"] <= 100.0 and metrics["n_test"] == 16
    # The reloaded weights are the run's, bit for bit, on a fresh model with the same trainable count
    # as the model the example adapted by hand (LoRA rank 8 on the same two towers).
    fresh, adapted = namespace["fresh"].model, namespace["loaded"].model
    saved = load_file(run / "peft_model.safetensors")
    params = dict(fresh.named_parameters())
    assert saved and set(saved) == {n for n, p in params.items() if p.requires_grad}
    assert all(params[n].detach().equal(t) for n, t in saved.items())
    assert count_params(fresh)["trainable"] == count_params(adapted)["trainable"] == metrics["trainable_params"] > 0
    assert (tmp_path / "runs" / "my-lora" / "peft_model.safetensors").is_file()


# ------------------------------------------------------------------------------------------- links

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def prose(text: str) -> str:
    """The text without fenced code blocks and code spans (where brackets are not links)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file: lower case, punctuation dropped, spaces to
    hyphens, '-1', '-2', ... for repeats."""
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", read(path)).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


DOCUMENTS = [README, *sorted((ROOT / "docs").rglob("*.md"))]


@pytest.mark.parametrize("doc", DOCUMENTS, ids=[str(d.relative_to(ROOT)) for d in DOCUMENTS])
def test_every_relative_link_points_at_an_existing_file_and_heading(doc):
    broken = []
    for target in LINK.findall(prose(read(doc))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        path = (doc.parent / path_part).resolve() if path_part else doc
        if not path.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target} (no such heading in {path.name})")
    assert not broken, f"{doc.relative_to(ROOT)}: broken links: {', '.join(broken)}"


def test_the_link_check_sees_links_and_anchors():
    """The checks above could pass by finding nothing: make sure they find the README's own links."""
    targets = LINK.findall(prose(read(README)))
    assert "docs/study.md" in targets and "#where-results-go" in targets
    assert "where-results-go" in anchors(README) and "quick-start" in anchors(README)


def test_ci_runs_exactly_the_quick_starts_test_command_and_it_lints():
    """The Quick start has two commands; the second (set up, lint, test) is what `.ci/run` runs."""
    quick = read(README).split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = [line for line in re.search(r"```bash\n(.*?)```", quick, re.S).group(1).splitlines()
                if line.strip() and not line.startswith("#")]
    assert len(commands) == 2, commands
    ci = [line for line in read(ROOT / ".ci" / "run").splitlines()
          if line and not line.startswith(("#", "set ", "cd "))]
    assert ci == [commands[1]] and "ruff check ." in commands[1] and "pytest" in commands[1]


# ------------------------------------------------------------------------ "Use what you trained"

def use_commands() -> list[str]:
    """The commands of the README's "Use what you trained" block, comments cut."""
    section = read(README).split("## Use what you trained", 1)[1].split("\n## ", 1)[0]
    m = re.search(r"^```bash\n(.*?)^```", section, re.S | re.M)
    assert m, "the section has no ```bash block"
    return [line.split("  #")[0].strip() for line in m.group(1).splitlines() if line.strip()]


def test_the_use_what_you_trained_commands_run_as_written(tmp_path, monkeypatch, capsys):
    """Each vlpeft command of the section runs through the CLI as written, with two changes a test
    needs: the fine-tuning stays a quick try (a few steps, small splits), and the runs it names that the
    block does not make (a study's caption cell, a run on a transformers BLIP) are made first, small."""
    import shlex

    import numpy as np
    from PIL import Image

    from vlpeft.cli import main
    from vlpeft.recipes.finetune import FinetuneConfig, finetune

    transformers = pytest.importorskip("transformers")
    commands = use_commands()
    assert [c.split()[:2] for c in commands[:5]] == [
        [".venv/bin/vlpeft", "finetune"], [".venv/bin/vlpeft", "evaluate"], [".venv/bin/vlpeft", "answer"],
        [".venv/bin/vlpeft", "caption"], [".venv/bin/vlpeft", "export"]]
    assert commands[5].startswith("tensorboard --logdir ")
    monkeypatch.chdir(tmp_path)
    quick = dict(length_policy="steps", steps=2, batch_size=8, val_limit=8, test_limit=8, evals=1, data_size=16)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)).save("shape.png")
    Path("images.jsonl").write_text('{"image": "shape.png"}\n')
    caption_run = shlex.split(commands[3])[shlex.split(commands[3]).index("--peft") + 1]
    finetune(FinetuneConfig(model="tiny", task="scenes-caption", method="lora", budget="4", **quick), caption_run,
             progress=False)
    blip = tmp_path / "blip-base"
    write_hf_blip(transformers, blip)
    export_run = shlex.split(commands[4])[2]
    finetune(FinetuneConfig(model=str(blip), task="easyvqa-vqa", method="lora", budget="4", **quick), export_run,
             progress=False)
    fast = ["--length-policy", "steps", "--steps", "2", "--batch-size", "8", "--data-size", "16",
            "--val-limit", "8", "--test-limit", "8", "--quiet"]
    for command in commands[:5]:
        argv = shlex.split(command)[1:]
        assert main(argv + (fast if argv[0] == "finetune" else [])) == 0, command
    out = capsys.readouterr().out
    assert "easyvqa-vqa lora: test vqa_accuracy" in out  # evaluate
    assert json.loads(Path("captions.jsonl").read_text())["image"] == "shape.png"
    assert (Path("exports/blip-lora") / "config.json").is_file()
    assert transformers.BlipForQuestionAnswering.from_pretrained("exports/blip-lora") is not None


def write_hf_blip(transformers, folder: Path) -> None:
    """A small BlipForQuestionAnswering saved by transformers (random weights, the shipped tiny
    tokenizer), as a real BLIP checkpoint folder is."""
    import shutil

    import torch

    from vlpeft.model.checkpoint import SHIPPED_DIR
    from vlpeft.model.tokenizer import load_tokenizer

    tokenizer = SHIPPED_DIR / "tiny" / "tokenizer.json"
    tok = load_tokenizer(tokenizer, add_blip_tokens=False)
    torch.manual_seed(0)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                  patch_size=8)
    text = dict(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=64, bos_token_id=tok.dec_id, pad_token_id=tok.pad_id,
                sep_token_id=tok.sep_id, eos_token_id=tok.sep_id)
    model = transformers.BlipForQuestionAnswering(
        transformers.BlipConfig(vision_config=vision, text_config=text, image_text_hidden_size=24))
    model.save_pretrained(folder)
    shutil.copyfile(tokenizer, folder / "tokenizer.json")
