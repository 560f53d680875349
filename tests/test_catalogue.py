"""The catalogue of methods: one file, one catalogue line and one test row add a method, and it then
reaches the registry, budgets, study specs, the report's findings and grouping, its figures and the
grid `vlpeft advise` proposes, with no other edit."""

import dataclasses
import sys
import textwrap

import pytest
import torch

from vlpeft import catalogue
from vlpeft.analysis import figures, findings
from vlpeft.peft import REGISTRY, apply_peft, count_params
from vlpeft.peft.budget import ladder
from vlpeft.study.preflight import confirm_grid
from vlpeft.study.spec import expand, parse_spec

# The one file: a parallel bottleneck on the MLP of each placed block, written as a contributor would.
THROWAWAY = '''
"""A throw-away method for the catalogue test: a parallel bottleneck beside each MLP."""
from dataclasses import dataclass, field

from vlpeft.peft.adapter import add_adapters
from vlpeft.peft.base import MethodSpec, PeftCommon, check_placement, register


@dataclass(frozen=True)
class ThrowawayConfig(PeftCommon):
    width: int = field(default=4, metadata={"help": "bottleneck width"})

    def __post_init__(self):
        check_placement(self.placement, "throwaway")


def apply(model, cfg):
    add_adapters(model, cfg.placement, ("mlp",), cfg.width, parallel=True, scale=1.0)


SPEC = register(MethodSpec("throwaway", ThrowawayConfig, apply))
'''
COLOUR = "#17becf"


@pytest.fixture
def throwaway(tmp_path, monkeypatch):
    (tmp_path / "throwaway_method.py").write_text(textwrap.dedent(THROWAWAY))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(catalogue, "CATALOGUE", dict(catalogue.CATALOGUE))
    # the one catalogue line
    catalogue.add(catalogue.Method("throwaway", "throwaway_method", "layer", COLOUR, "width", (2, 4, 8), (2, 4, 8),
                                   1e-3, "a parallel bottleneck on the MLP"))
    yield "throwaway"
    REGISTRY.pop("throwaway", None)
    sys.modules.pop("throwaway_method", None)


def test_the_catalogue_is_the_registry_in_its_order():
    assert list(catalogue.CATALOGUE) == list(REGISTRY)
    assert catalogue.compared() == ("prompt", "prefix", "adapter", "lora", "mam")
    assert catalogue.groups() == {"embedding composition": ("prompt", "prefix"),
                                  "layer composition": ("adapter", "lora", "mam")}
    for name, spec in REGISTRY.items():
        assert spec.entry is catalogue.CATALOGUE[name] and spec.default_lr == catalogue.CATALOGUE[name].default_lr


@pytest.mark.parametrize("change, needle", [
    ({"name": "lora"}, "already in the catalogue"),
    ({"group": "sequence"}, "group must be one of embedding, layer"),
    ({"budgets": ()}, "has a ladder and budgets"),
    ({"knob": None}, "has a ladder and budgets"),
    ({"ladder": (0, 2)}, "positive knob values"),
])
def test_the_catalogue_refuses_a_bad_line(change, needle):
    line = dataclasses.replace(catalogue.CATALOGUE["lora"], **{"name": "lora-2", **change})
    before = dict(catalogue.CATALOGUE)
    with pytest.raises(ValueError, match=needle):
        catalogue.add(line)
    assert catalogue.CATALOGUE == before


def test_a_new_method_reaches_the_registry_budgets_and_a_study_spec(throwaway):
    from vlpeft.model.blip import Blip
    from vlpeft.model.config import BlipConfig, TextConfig, VisionConfig

    def cfg():
        return BlipConfig(vision=VisionConfig(image_size=16, patch_size=8, width=32, depth=2, heads=2, mlp_width=64),
                          text=TextConfig(vocab_size=50, width=32, depth=2, heads=4, mlp_width=48, max_positions=32,
                                          cross_width=32), embed_dim=16)

    torch.manual_seed(0)
    model = Blip(cfg())
    apply_peft(model, throwaway, {"width": 3})
    counts = count_params(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".adapters." in n for n in trainable)
    assert counts["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert [r["value"] for r in ladder(cfg(), throwaway)] == [2, 4, 8]
    spec = parse_spec({"name": "t", "model": "tiny", "tasks": ["scenes-caption"], "data_sizes": [8], "seeds": [0],
                       "methods": {throwaway: {"budgets": [2, 4]}}})
    assert [(c.method, c.budget) for c in expand(spec)] == [(throwaway, "2"), (throwaway, "4")]


def test_a_new_method_reaches_the_findings_the_grouping_the_figures_and_advise(throwaway, tmp_path):
    methods = catalogue.compared()
    assert methods[-1] == throwaway and catalogue.groups()["layer composition"][-1] == throwaway

    def row(task, method, **verdicts):
        return {"task": task, "label": method, "method": method,
                **{c: {"verdict": verdicts.get(c, "inconclusive")} for c in findings.CLAIMS}}

    verdicts = [row("vqa", m, data_trend="holds") for m in methods]
    sentence = next(s for s in findings.task_sentences(verdicts, {"vqa": "new data, new task"})
                    if "rose with data size" in s)
    assert "for 6 of 6 methods" in sentence and throwaway in sentence
    cells = [{"task": "vqa", "label": m, "method": m, "n_train": 100, "size": 100, "val": v, "mean": v, "ci": (v, v),
              "metric": "accuracy", "params": 10} for m, v in (("prompt", 50.0), (throwaway, 70.0))]
    (g,) = findings.groups(verdicts, cells)
    assert g["best"]["layer composition"]["label"] == throwaway
    assert f"layer composition (adapter, lora, mam, {throwaway})" in findings.group_sentence(g)

    assert figures.score_vs_data(cells, "vqa", tmp_path) == ["vqa-data.png", "vqa-data.svg"]
    assert COLOUR in (tmp_path / "vqa-data.svg").read_text()

    grid = confirm_grid({"task": "vqa", "model": "tiny", "task_ref": "easyvqa-vqa"}, 400, None, None, [], {})
    assert grid["methods"][throwaway] == {"budgets": [2, 4, 8]}
    assert list(grid["methods"]) == [*methods, "frozen"]
