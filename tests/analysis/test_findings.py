"""The findings in sentences and the comparison with Tian et al., on verdict rows with known answers."""

from vlpeft import catalogue
from vlpeft.analysis import findings
from vlpeft.analysis.claims import CLAIMS


def row(task, method, **verdicts):
    """A judge_claims row: every claim inconclusive unless given."""
    out = {"task": task, "label": method, "method": method}
    for claim in CLAIMS:
        out[claim] = {"verdict": verdicts.get(claim, "inconclusive")}
    return out


def cell(task, method, n, mean, ci):
    return {"task": task, "label": method, "method": method, "n_train": n, "mean": mean, "ci": ci}


RELATIONS = {"cap": "same data, same task", "vqa": "new data, new task", "mine": "your data"}
CONSISTENT = [row("cap", m, data_flat="holds", param_nonmonotonic="holds") for m in ("prompt", "prefix", "lora")] + \
    [row("cap", "adapter", data_flat="does not hold", data_trend="holds"), row("cap", "mam"),
     row("cap", "full", data_trend="holds")]  # a baseline: not one of the five methods
INCONSISTENT = [row("vqa", m, data_trend="holds", param_trend="holds") for m in ("adapter", "lora", "mam")] + \
    [row("vqa", "prompt", data_flat="holds"), row("vqa", "prefix", data_flat="holds")]


def test_relations_map_to_the_papers_two_cases():
    assert findings.consistency_class("same data, same task") == "consistent"
    assert findings.consistency_class("same data, same task (for a real BLIP)") == "consistent"
    assert findings.consistency_class("same images, new task (for a real BLIP)") == "inconsistent"  # VQAv2
    assert findings.consistency_class("new data, same task") == "inconsistent"
    assert findings.consistency_class("your data") is None and findings.consistency_class(None) is None


def test_one_sentence_per_task_and_claim_names_the_methods():
    sentences = findings.task_sentences(CONSISTENT + INCONSISTENT, RELATIONS)
    assert len(sentences) == 8
    assert ("On cap (same data, same task): data size did not matter for 3 of 5 methods (prompt, prefix, lora); "
            "it did matter for adapter; inconclusive for mam.") in sentences
    assert "On vqa (new data, new task): performance rose with data size for 3 of 5 methods (adapter, lora, mam); " \
        "inconclusive for prompt, prefix." in sentences
    untestable = [row("x", "lora", param_nonmonotonic="untestable")]
    assert findings.claim_sentence(untestable, "param_nonmonotonic").endswith(
        "untestable for lora (fewer than 3 budgets).")


def test_agreement_with_the_paper_per_task():
    rows = {r["task"]: r for r in findings.paper_comparison(
        CONSISTENT + INCONSISTENT + [row("mine", "lora", data_trend="holds")], RELATIONS)}
    assert rows["cap"]["agreement"] == "agrees" and rows["cap"]["methods"] == 5
    assert rows["cap"]["found"] == {"data_flat": 3, "param_nonmonotonic": 3, "data_trend": 1}
    assert rows["vqa"]["agreement"] == "agrees"  # both rising claims hold for 3 of 5; "data is flat" for 2 of 5 only
    mixed = [row("vqa", m, data_trend="holds") for m in catalogue.compared()]  # parameters: not shown
    assert findings.paper_comparison(mixed, RELATIONS)[0]["agreement"] == "not shown"
    assert rows["mine"]["agreement"] == "no expectation" and rows["mine"]["found"] == {}
    # the opposite of an expectation shown by most methods is a difference
    flat_vqa = [row("vqa", m, data_flat="holds") for m in catalogue.compared()]
    assert findings.paper_comparison(flat_vqa, RELATIONS)[0]["agreement"] == "differs"
    rising = [row("vqa", m, data_trend="holds", param_trend="holds") for m in catalogue.compared()]
    assert findings.paper_comparison(rising, RELATIONS)[0]["agreement"] == "agrees"
    assert "against it, data size does not matter: 0 of 5" in findings.found_text(
        findings.paper_comparison(rising, RELATIONS)[0])


def test_the_two_groups_are_compared_at_the_largest_data_size():
    cells = [cell("vqa", "lora", 1600, 70.0, (69.0, 71.0)), cell("vqa", "lora", 100, 60.0, (59.0, 61.0)),
             cell("vqa", "adapter", 1600, 66.0, (65.0, 67.0)), cell("vqa", "prompt", 1600, 50.0, (48.0, 52.0)),
             cell("vqa", "prefix", 1600, 52.0, (51.0, 53.0)), cell("vqa", "prefix", 100, 80.0, (79.0, 81.0))]
    (g,) = findings.groups(INCONSISTENT, cells)
    assert g["size"] == 1600 and g["best"]["layer composition"]["label"] == "lora"
    assert g["best"]["embedding composition"]["mean"] == 52.0 and not g["overlap"]
    assert set(g["differ"]) == {"data_trend", "param_trend", "data_flat"}
    text = findings.group_sentence(g)
    assert text.startswith("On vqa, at 1,600 examples, layer composition (adapter, lora, mam) reached 70 at best")
    assert "the intervals do not overlap" in text
    assert ("performance rises with data size (inconclusive for most of embedding composition, "
            "holds for layer composition)") in text
    assert findings.groups(CONSISTENT, [cell("cap", "lora", 10, 1.0, (1.0, 1.0))]) == []  # no embedding cell


def test_a_trend_refuted_by_no_effect_is_not_called_a_fall():
    fell, flat = row("vqa", "lora", data_trend="does not hold"), row("vqa", "mam", data_trend="does not hold")
    fell["data_trend"].update(rho=-0.7, p=0.01)
    flat["data_trend"].update(rho=0.4, p=0.09)  # refuted because data_flat showed no effect beyond ±δ
    assert findings.claim_sentence([fell, flat], "data_trend") == (
        "performance rose with data size for 0 of 2 methods; it fell for lora; it stayed within ±δ for mam.")
