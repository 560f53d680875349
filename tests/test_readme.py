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
