"""Cells run longest first by their expected cost, learnt from the study's finished runs; the ETA
counts what is left at the pace of what is done."""

import json
from types import SimpleNamespace

import pytest

from vlpeft.study.cost import eta_seconds, expected_seconds, longest_first, units

VQA = {"model": "tiny", "task": "easyvqa-vqa", "method": "lora", "max_steps": 4000, "batch_size": 32}
CAPTION = {"model": "tiny", "task": "scenes-caption", "method": "lora", "max_steps": 1500, "batch_size": 32}


def cell(task, label="lora", budget="4", size=100):
    return SimpleNamespace(id=f"{task}.{label}.b{budget}.n{size}", task=task, label=label, budget=budget,
                           data_size=size)


def row(c, fields, seconds, examples):
    return {"id": c.id, "task": c.task, "label": c.label, "budget": c.budget, "data_size": str(c.data_size),
            "status": "done", "config": json.dumps(fields),
            "metrics": json.dumps({"train_seconds": seconds - 1, "eval_seconds": 1, "data_size": examples})}


def test_without_history_the_step_cap_orders_the_cells_and_the_frozen_model_costs_nothing():
    frozen = {**VQA, "method": "frozen"}
    todo = [(300, cell("scenes-caption", size=300), CAPTION), (300, cell("easyvqa-vqa", size=300), VQA),
            (30, cell("easyvqa-vqa", size=30), {**VQA, "max_epochs": 10}),
            (300, cell("easyvqa-vqa", label="frozen", budget=None, size=300), frozen)]
    cost = expected_seconds(todo, [])
    assert cost == {todo[0][1].id: units(CAPTION, 300), todo[1][1].id: 4000 * 32, todo[2][1].id: 10 * 1 * 32,
                    todo[3][1].id: 0.0}
    assert [t[1].label for t in longest_first(todo, cost)][-1] == "frozen"  # it only evaluates: last
    assert [t[1].task for t in longest_first(todo, cost)][:3] == ["easyvqa-vqa", "scenes-caption", "easyvqa-vqa"]


def test_finished_runs_of_the_same_kind_set_the_expected_seconds():
    done_vqa, done_cap = cell("easyvqa-vqa", size=100), cell("scenes-caption", size=100)
    rows = [row(done_vqa, VQA, 30.0, 100), row(done_cap, CAPTION, 300.0, 100)]  # captions: slow evaluations
    other_seed = cell("easyvqa-vqa", size=100)
    bigger_cap = cell("scenes-caption", size=100)
    unseen = cell("easyvqa-vqa", label="prefix")
    todo = [(100, other_seed, VQA), (100, bigger_cap, {**CAPTION, "max_steps": 3000}), (100, unseen, VQA)]
    cost = expected_seconds(todo, rows)
    assert cost[other_seed.id] == pytest.approx(30.0)
    assert cost[bigger_cap.id] == pytest.approx(600.0)  # its cap is twice theirs
    assert cost[unseen.id] == pytest.approx(30.0)  # same task: the task's runs
    assert longest_first(todo, cost)[0][1] is bigger_cap


def test_longest_first_lets_two_workers_finish_together():
    """Two workers, costs 1,1,1,1,4 (the long one the smallest subset): by subset size the 4 comes last
    and the run ends at 6 with one worker idle for 4; longest first, both end at 4."""
    cells = [(i, cell("easyvqa-vqa", size=i), VQA) for i in range(5)]
    cost = {c.id: (4.0 if i == 0 else 1.0) for i, c, _ in cells}

    def makespan(order):
        free = [0.0, 0.0]
        for _, c, _ in order:
            k = free.index(min(free))
            free[k] += cost[c.id]
        return max(free)

    assert makespan(sorted(cells, key=lambda t: -t[0])) == 6.0
    assert makespan(longest_first(cells, cost)) == 4.0


def test_the_eta_counts_what_is_left_at_the_pace_of_what_is_done():
    cost = {"a": 10.0, "b": 5.0, "c": 5.0}
    assert eta_seconds(20.0, cost, set()) is None
    assert eta_seconds(20.0, cost, {"a"}) == pytest.approx(20.0)  # 10 units took 20 s; 10 are left
    assert eta_seconds(30.0, cost, {"a", "b"}) == pytest.approx(10.0)
