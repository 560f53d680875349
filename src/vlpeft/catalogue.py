"""The catalogue of methods: everything the package knows about a PEFT method or baseline that needs
no torch, in one table that every layer reads.

`vlpeft.peft` imports each entry's `module`, which implements the method (a config dataclass and an
`apply` function, registered with `vlpeft.peft.base.register`); the analysis, the report's figures
and `vlpeft advise` read the same entries without loading torch. So a new method is one file (its
module), one line here and one test row (docs/extending.md).

`group` places a method in one of the two groups of Tian et al. (arXiv 2403.08433): *embedding*
composition (prompt and prefix tuning add vectors to the sequence) or *layer* composition (adapters,
LoRA and MAM add modules to the layers). A method with a group is one the study compares; one
without (full, frozen, BitFit, IA3) is a baseline to them.

`default_lr` is the learning rate a run uses unless it is given one. PEFT methods take 10-100x the
learning rate of full fine-tuning (Hu et al. 2021; He et al. 2022; Lester et al. 2021 go higher
still for prompts); these are starting points measured on the tiny model, not tuned per task, and a
study can sweep them (an `lr` grid, selected on validation).
"""

from __future__ import annotations

from dataclasses import dataclass

GROUPS = {"embedding": "embedding composition", "layer": "layer composition"}  # group -> how the report names it


@dataclass(frozen=True)
class Method:
    name: str
    module: str  # the module implementing it, imported (so registered) by vlpeft.peft
    group: str | None  # a key of GROUPS; None: a baseline, not one of the methods a study compares
    colour: str  # its colour in the report's figures
    knob: str | None  # the config field a budget sets (None: the method has no size)
    ladder: tuple[int, ...]  # the knob values `vlpeft methods` lists
    budgets: tuple[int, ...]  # the three a study sweeps by default (preflight's confirming grid, the quick preset)
    default_lr: float  # see the module doc
    summary: str  # one line for `vlpeft methods`
    trains: bool = True  # False: nothing to train (the frozen model): a run only evaluates


CATALOGUE: dict[str, Method] = {}


def add(m: Method) -> Method:
    """Enter `m` in the catalogue; ValueError on a second method of the same name or a bad field."""
    where = f"method {m.name!r}"
    if m.name in CATALOGUE:
        raise ValueError(f"{where} is already in the catalogue")
    if isinstance(m.default_lr, bool) or not isinstance(m.default_lr, (int, float)) or not 0 <= m.default_lr < 1:
        raise ValueError(f"{where}: default_lr must be a learning rate in [0, 1), got {m.default_lr!r}")
    if m.group is not None and m.group not in GROUPS:
        raise ValueError(f"{where}: group must be one of {', '.join(GROUPS)} or None, got {m.group!r}")
    if (m.knob is None) != (not m.ladder) or (m.knob is None) != (not m.budgets):
        raise ValueError(f"{where}: a method with a knob has a ladder and budgets, one without has neither")
    if any(not isinstance(v, int) or v < 1 for v in m.ladder + m.budgets):
        raise ValueError(f"{where}: ladder and budgets are positive knob values")
    CATALOGUE[m.name] = m
    return m


def compared() -> tuple[str, ...]:
    """The methods a study compares (those with a group), in catalogue order."""
    return tuple(m.name for m in CATALOGUE.values() if m.group)


def groups() -> dict[str, tuple[str, ...]]:
    """The report's name of each group -> its methods, in catalogue order."""
    return {title: tuple(m.name for m in CATALOGUE.values() if m.group == g) for g, title in GROUPS.items()}


def colour(name: str) -> str | None:
    """A method's colour in figures; None (the plotting library's choice) for a name not in the catalogue."""
    m = CATALOGUE.get(name)
    return m.colour if m else None


# The registry, in the order `vlpeft methods` lists it.
add(Method("prompt", "vlpeft.peft.prompt", "embedding", "#1f77b4", "n_tokens", (2, 4, 8, 16, 32), (4, 8, 16), 1e-2,
           "learned tokens prepended to the input of each placed tower"))
add(Method("prefix", "vlpeft.peft.prefix", "embedding", "#ff7f0e", "length", (2, 4, 8, 16, 32), (2, 8, 32), 1e-3,
           "learned key/value prefixes in every attention, via an MLP reparameterisation"))
add(Method("adapter", "vlpeft.peft.adapter", "layer", "#2ca02c", "bottleneck", (2, 4, 8, 16, 32, 64), (2, 8, 32),
           1e-3, "Houlsby sequential bottleneck after attention and after the MLP"))
add(Method("lora", "vlpeft.peft.lora", "layer", "#d62728", "rank", (1, 2, 4, 8, 16, 32), (1, 4, 16), 1e-3,
           "low-rank update of the query and value projections of every attention"))
add(Method("mam", "vlpeft.peft.mam", "layer", "#9467bd", "bottleneck", (4, 8, 16, 32, 64, 128), (4, 16, 64), 1e-3,
           "prefix tuning on attention + scaled parallel adapter on the MLP"))
add(Method("full", "vlpeft.peft.baselines", None, "#000000", None, (), (), 1e-4, "all weights trained"))
add(Method("frozen", "vlpeft.peft.baselines", None, "#7f7f7f", None, (), (), 0.0,
           "nothing trained: the pre-trained model as is", trains=False))
add(Method("bitfit", "vlpeft.peft.baselines", None, "#8c564b", None, (), (), 3e-3, "bias terms only"))
add(Method("ia3", "vlpeft.peft.ia3", None, "#e377c2", None, (), (), 3e-3,
           "learned rescaling of keys, values and MLP activations"))
