"""The record of one fine-tuning run (a run folder's `metrics.json`, and the `metrics` column of a
study's store), as one dataclass: written by `recipes.finetune`, read by the study runner and the
analysis, so writer and readers cannot drift apart. No torch here: the analysis reads it.

`RunRecord.from_dict` reads records written before a field existed (the field takes its default)
and keeps fields it does not know in `extra`, so older and newer run folders stay readable.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from vlpeft.errors import UserError


@dataclass(frozen=True)
class RunRecord:
    # what ran
    task: str = field(metadata={"help": "task name"})
    method: str = field(metadata={"help": "PEFT method"})
    metric: str = field(metadata={"help": "the task's primary metric (cider_d, vqa_accuracy)"})
    test_score: float = field(
        metadata={"help": "primary metric on the test split, with the validation-selected weights"}
    )
    best_val_score: float = field(metadata={"help": "the best validation score (model selection, step 0 included)"})
    data_size: int = field(metadata={"help": "training examples used"})
    status: str = field(default="done", metadata={"help": "'done' (a record is written only for a finished run)"})
    task_ref: str | None = field(default=None, metadata={"help": "the built-in name or the task file"})
    task_kind: str | None = field(default=None, metadata={"help": "caption or vqa"})
    task_relation: str | None = field(default=None, metadata={"help": "relation to the checkpoint's pre-training"})
    knob: str | None = field(default=None, metadata={"help": "the method's size knob (rank, bottleneck, ...)"})
    knob_value: int | None = field(default=None, metadata={"help": "its value"})
    budget_target: int | None = field(default=None, metadata={"help": "the parameter target asked for, if any"})
    method_config: dict = field(default_factory=dict, metadata={"help": "the method's resolved config"})
    data_fraction: float | None = field(default=None, metadata={"help": "data_size / train_pool"})
    train_pool: int | None = field(default=None, metadata={"help": "training examples the task has"})
    seed: int = field(default=0, metadata={"help": "training seed"})
    subset_seed: int = field(default=0, metadata={"help": "data subset seed"})
    # scores
    secondary: dict = field(default_factory=dict, metadata={"help": "other test metrics and baselines "
                                                                    "(e.g. majority_baseline)"})
    metrics_ran: list = field(default_factory=list, metadata={"help": "which scorers ran"})
    test_examples: list = field(default_factory=list, metadata={"help": "the first predictions, for a look"})
    n_val: int | None = field(default=None, metadata={"help": "validation examples scored"})
    n_test: int | None = field(default=None, metadata={"help": "test examples scored"})
    # parameters
    params: dict = field(default_factory=dict, metadata={"help": "count_params: trainable, budget, backbone, per part"})
    trainable_params: int = field(default=0, metadata={"help": "parameters trained"})
    budget_params: int = field(default=0, metadata={"help": "trainable parameters counted against the budget"})
    total_params: int | None = field(default=None, metadata={"help": "all parameters of the adapted model"})
    # training
    lr: float | None = field(default=None, metadata={"help": "peak learning rate"})
    steps: int | None = field(default=None, metadata={"help": "optimiser steps planned"})
    steps_done: int | None = field(default=None, metadata={"help": "optimiser steps run (early stopping)"})
    steps_to_best: int | None = field(default=None, metadata={"help": "the step of the best validation score "
                                                                     "(0: the starting model); its weights are kept"})
    converged: bool | None = field(default=None, metadata={"help": "validation had stopped improving beyond its noise "
                                                                  "when the run ended (vlpeft.convergence); None in "
                                                                  "records from before it was judged"})
    convergence: dict = field(default_factory=dict, metadata={"help": "the evidence: state, noise, threshold, window, "
                                                                     "the levels compared, reason"})
    stopped_by: str | None = field(default=None, metadata={"help": "converged (early stopping), cap (max_steps / "
                                                                  "max_epochs), length (a fixed length) or untrained"})
    best_val_se: float | None = field(default=None, metadata={"help": "standard error of the best validation score"})
    batch_size: int | None = field(default=None, metadata={"help": "examples per step"})
    length_policy: str | None = field(default=None, metadata={"help": "converge, epochs, steps or epochs_min_steps"})
    epochs: int | None = field(default=None, metadata={"help": "the policy's epochs"})
    min_steps: int | None = field(default=None, metadata={"help": "the policy's floor on steps"})
    resumed_from_step: int | None = field(default=None, metadata={"help": "the step a longer run went on from, "
                                                                         "taking a shorter run's saved state (the "
                                                                         "length check); None: trained from step 0"})
    train_seconds: float | None = field(default=None, metadata={"help": "training wall time (of this run's own steps)"})
    eval_seconds: float | None = field(default=None, metadata={"help": "test evaluation wall time"})
    val_seconds: float | None = field(default=None, metadata={"help": "validation wall time (all evaluations, "
                                                                     "included in train_seconds)"})
    examples_per_second: float | None = field(default=None, metadata={"help": "training throughput"})
    peak_memory_mb: float | None = field(default=None, metadata={"help": "peak memory of the run"})
    precision: str | None = field(default=None, metadata={"help": "the precision used: fp32 or bf16 (autocast)"})
    compiled: bool | None = field(default=None, metadata={"help": "whether the training loss was compiled "
                                                                  "(torch.compile)"})
    # provenance
    task_options: dict = field(default_factory=dict, metadata={"help": "the task kind's options"})
    scene_seed: int | None = field(default=None, metadata={"help": "synthetic-scene seed (scenes tasks)"})
    task_details: dict = field(default_factory=dict, metadata={"help": "how the task was loaded and split"})
    base_model_digest: str | None = field(default=None, metadata={"help": "digest of the base checkpoint: weights, "
                                                                          "config, tokenizer, preprocessing (weights "
                                                                          "alone in older records)"})
    task_data_digest: str | None = field(default=None, metadata={"help": "digest of a task file's records (None: "
                                                                        "a built-in task)"})
    config: dict = field(default_factory=dict, metadata={"help": "the resolved FinetuneConfig"})
    environment: dict = field(default_factory=dict, metadata={"help": "versions, commit, host, device, threads, time"})
    extra: dict = field(default_factory=dict, metadata={"help": "fields of a newer record this version does not know"})

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {**{k: v for k, v in d.items() if k != "extra"}, **self.extra}

    @staticmethod
    def from_dict(d: Any, where: str = "run record") -> "RunRecord":
        if not isinstance(d, dict):
            raise UserError(f"{where}: expected a JSON object")
        names = {f.name for f in dataclasses.fields(RunRecord)} - {"extra"}
        required = [f.name for f in dataclasses.fields(RunRecord)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [k for k in required if k not in d]
        if missing:
            raise UserError(f"{where}: not a complete run record (no {', '.join(missing)})")
        return RunRecord(**{k: v for k, v in d.items() if k in names},
                         extra={k: v for k, v in d.items() if k not in names})

    @property
    def majority_baseline(self) -> float | None:
        return (self.secondary or {}).get("majority_baseline")
