"""The settings of one fine-tuning run (`FinetuneConfig`) and of a pre-training (`PretrainConfig`),
apart from the recipes so that reading or validating them (the CLI's flags, a study spec) needs no
torch. Every field carries its help text and its allowed values (`choices`, `min`, `max`, `above`,
`below`), checked by `vlpeft.validate.check_values`,
and two flags a study reads: `grid` (set per cell by the study, not in a spec's `training`) and
`result: False` (does not change a run's result: not compared when a study resumes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vlpeft.data.subsets import parse_size
from vlpeft.errors import UserError
from vlpeft.model.config import preset
from vlpeft.recipes import defaults
from vlpeft.validate import SEED_MAX, check_values

LENGTH_POLICIES = ("converge", "epochs", "steps", "epochs_min_steps")
PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
COMPILE = ("auto", "on", "off")
LOGS = ("none", "tensorboard")


@dataclass(frozen=True)
class FinetuneConfig:
    model: str = field(metadata={"grid": True, "help": "tiny (shipped with vlpeft), a checkpoint folder (vlpeft or "
                                                       "transformers BLIP) or a hub id"})
    task: str = field(
        metadata={"grid": True, "help": "built-in task name (vlpeft tasks) or a task file (YAML) of your own data"}
    )
    method: str = field(metadata={"grid": True, "help": "PEFT method (`vlpeft methods` lists them)"})
    budget: str | None = field(
        default=None, metadata={"grid": True, "help": "knob value (8, knob=8) or parameter target (params=50k)"}
    )
    method_options: dict = field(
        default_factory=dict, metadata={"grid": True, "help": "other method config fields (placement, targets, ...)"}
    )
    data_size: Any = field(  # kept as written (a run records it); read by vlpeft.data.subsets.parse_size
        default=1.0, metadata={"grid": True, "help": "training examples: fraction (0.1, '10%') or count (200)"}
    )
    seed: int = field(
        default=0,
        metadata={"grid": True, "min": 0, "max": SEED_MAX, "help": "training seed (initialisation, batch order)"},
    )
    subset_seed: int = field(
        default=0,
        metadata={
            "grid": True,
            "min": 0,
            "max": SEED_MAX,
            "help": "seed of the nested data subsets (separate from seed)",
        },
    )
    lr: float | None = field(
        default=None,
        metadata={
            "grid": True,
            "min": 0,
            "help": "peak learning rate; default: the method's (vlpeft/catalogue.py, shown by vlpeft methods)",
        },
    )
    batch_size: int = field(default=defaults.COMMON["batch_size"], metadata={"min": 1, "help": "examples per step"})
    length_policy: str = field(
        default=defaults.COMMON["length_policy"],
        metadata={
            "choices": LENGTH_POLICIES,
            "help": "converge (train until validation stops improving beyond its noise: early stopping, best "
            "weights kept, capped by max_steps / max_epochs), or a fixed length for compute-matched controls: "
            "epochs (passes over the subset), steps (exactly `steps`), epochs_min_steps (epochs, at least "
            "`min_steps`)",
        },
    )
    epochs: int = field(
        default=defaults.COMMON["epochs"], metadata={"min": 1, "help": "passes over the training subset"}
    )
    min_steps: int = field(
        default=defaults.COMMON["min_steps"],
        metadata={"min": 0, "help": "floor on steps: epochs_min_steps trains at least this many; converge does "
                                    "not stop before it"},
    )
    min_epochs: float = field(
        default=defaults.COMMON["min_epochs"],
        metadata={"min": 0, "help": "converge: nor stop before this many passes over the training subset (a "
                                    "floor that grows with the data: on a larger subset a first plateau is often "
                                    "followed by a second rise); at most half the cap"},
    )
    steps: int = field(default=0, metadata={"min": 0, "help": "exact steps (policy 'steps')"})
    max_steps: int = field(
        default=defaults.COMMON["max_steps"],
        metadata={"min": 1, "help": "converge: the cap on optimiser steps (a run that reaches it while still "
                                    "improving is recorded as not converged)"},
    )
    max_epochs: float = field(
        default=0, metadata={"min": 0, "help": "converge: a cap in passes over the subset as well (0 = none); "
                                               "the smaller cap applies"}
    )
    eval_every: int = field(
        default=defaults.COMMON["eval_every"],
        metadata={"min": 1, "help": "converge: a validation evaluation every this many steps at first"},
    )
    eval_growth: float = field(
        default=defaults.COMMON["eval_growth"],
        metadata={"min": 1, "help": "converge: each evaluation at least this many times the step of the one "
                                    "before (1 = every eval_every steps), so `patience` evaluations span a fixed "
                                    "share of a long run, where learning is slower"},
    )
    warmup_ratio: float = field(
        default=defaults.COMMON["warmup_ratio"],
        metadata={"min": 0, "below": 1, "help": "linear warm-up over this fraction of the steps (converge: of "
                                                "min_steps), then cosine decay to 0 (converge: constant)"},
    )
    warmup_steps: int = field(
        default=0, metadata={"min": 0, "help": "linear warm-up steps, overriding warmup_ratio (0: use the ratio)"}
    )
    weight_decay: float = field(
        default=defaults.COMMON["weight_decay"], metadata={"min": 0, "help": "AdamW weight decay on matrices"}
    )
    label_smoothing: float = field(
        default=defaults.COMMON["label_smoothing"], metadata={"min": 0, "below": 1, "help": "LM loss label smoothing"}
    )
    grad_clip: float = field(
        default=defaults.COMMON["grad_clip"], metadata={"min": 0, "help": "gradient-norm clip (0 = off)"}
    )
    evals: int = field(default=5, metadata={"min": 1, "help": "fixed lengths: validation evaluations over the "
                                                          "run, after the one at step 0"})
    patience: int = field(
        default=defaults.COMMON["patience"],
        metadata={"min": 1, "help": "evaluations judged together: converge stops after this many without an "
                                    "improvement beyond the noise; every run's convergence is judged on its last "
                                    "this many"},
    )
    patience_ratio: float = field(
        default=defaults.COMMON["patience_ratio"],
        metadata={"min": 1, "help": "converge: nor stop before this many times the step of the best evaluation so "
                                    "far (patience that grows with the run: a plateau early in a run is not its "
                                    "end)"},
    )
    noise_z: float = field(
        default=1.0, metadata={"min": 0, "help": "an improvement counts when it exceeds this many standard errors "
                                                 "of the validation score"}
    )
    val_limit: int = field(default=500, metadata={"min": 0, "help": "validation examples used for selection (0 = all)"})
    test_limit: int = field(default=0, metadata={"min": 0, "help": "test examples scored (0 = all)"})
    task_options: dict = field(default_factory=dict, metadata={"help": "options of the task's kind (caption: prompt, "
                                                                       "num_beams, max_new_tokens; vqa: inference, "
                                                                       "rank_k); defaults from the task"})
    max_text_len: int = field(default=40, metadata={"min": 4, "help": "tokens kept per text, incl. specials"})
    scene_seed: int | None = field(
        default=None,
        metadata={
            "min": 0,
            "max": SEED_MAX,
            "help": "synthetic-scene seed; default: the checkpoint's pre-training seed",
        },
    )
    paths: dict = field(
        default_factory=dict,
        metadata={"grid": True, "help": "data files of tasks that take them (coco-caption, vqav2): key -> path"},
    )
    feature_cache: bool = field(
        default=True,
        metadata={"result": False, "help": "encode each image once when the vision encoder stays frozen and untouched"},
    )
    feature_cache_dir: str | None = field(
        default=None,
        metadata={
            "result": False,
            "help": "folder of the on-disk feature cache shared by runs and workers (None: memory only)",
        },
    )
    feature_cache_disk_mb: float = field(
        default=8192,
        metadata={"result": False, "min": 0, "help": "stop adding to the on-disk feature cache past this size"},
    )
    precision: str = field(
        default="auto",
        metadata={
            "choices": PRECISIONS,
            "help": "fp32; bf16 (autocast of forward passes: matmuls in bfloat16, weights and optimiser in fp32); "
                    "auto = bf16 on a CUDA device that supports it, else fp32",
        },
    )
    compile: str = field(
        default="auto",
        metadata={
            "result": False,
            "choices": COMPILE,
            "help": "torch.compile the training step's loss (forward; backward through AOTAutograd): on, off, or "
                    "auto = on only on device types where benchmarks/bench.py's compile_speedup found a whole "
                    "cell, compile included, faster (docs/speed.md)",
        },
    )
    threads: int = field(
        default=0, metadata={"grid": True, "result": False, "min": 0, "help": "torch threads (0 = leave as is)"}
    )
    device: str = field(
        default="auto", metadata={"result": False, "choices": DEVICES, "help": "auto (cuda if available), cpu or cuda"}
    )
    log: str = field(
        default="none",
        metadata={
            "result": False,
            "choices": LOGS,
            "help": "tensorboard: write TensorBoard events into the run folder as it trains (training loss and "
                    "learning rate, validation score and its standard error, convergence and test score); open "
                    "them with `tensorboard --logdir RUN_FOLDER` (needs pip install 'vlpeft[tensorboard]')",
        },
    )

    def __post_init__(self):
        check_values(self, "finetune")
        parse_size(self.data_size, "finetune: data_size")
        if self.length_policy == "steps" and self.steps <= 0:
            raise UserError("finetune: length_policy 'steps' needs steps > 0")


def fields_where(**flags) -> tuple[str, ...]:
    """FinetuneConfig field names whose metadata has these values, e.g. fields_where(result=False)."""
    import dataclasses

    return tuple(f.name for f in dataclasses.fields(FinetuneConfig)
                 if all(f.metadata.get(k, True if k == "result" else None) == v for k, v in flags.items()))


@dataclass(frozen=True)
class PretrainConfig:
    preset: str = field(default="tiny", metadata={"help": "model preset (vlpeft.model.config.PRESETS)"})
    seed: int = field(
        default=0,
        metadata={"min": 0, "max": SEED_MAX, "help": "seed for the scenes, the initialisation and the batches"},
    )
    scenes: int = field(default=20000, metadata={"above": 0, "help": "training scenes (the generator's split 'train')"})
    steps: int = field(default=1740, metadata={"above": 0, "help": "optimiser steps"})
    batch_size: int = field(default=32, metadata={"above": 0, "help": "image-caption pairs per step"})
    lr: float = field(
        default=1e-3, metadata={"above": 0, "help": "peak AdamW learning rate (linear warm-up, cosine decay)"}
    )
    warmup: int = field(default=150, metadata={"min": 0, "help": "warm-up steps"})
    single_object_fraction: float = field(
        default=0.25,
        metadata={
            "min": 0,
            "max": 1,
            "help": "curriculum: this fraction of the steps, at "
            "the start, draws only the training scenes with "
            "one object, whose caption names its shape "
            "directly; later steps draw from all scenes. 0 = "
            "off",
        },
    )
    weight_decay: float = field(default=0.05, metadata={"min": 0, "help": "AdamW weight decay (not on biases/norms)"})
    label_smoothing: float = field(
        default=0.1, metadata={"min": 0, "below": 1, "help": "LM loss label smoothing, as BLIP"}
    )
    itc_weight: float = field(default=1.0, metadata={"min": 0, "help": "weight of the ITC loss"})
    itm_weight: float = field(default=1.0, metadata={"min": 0, "help": "weight of the ITM loss"})
    lm_weight: float = field(default=1.0, metadata={"min": 0, "help": "weight of the LM loss"})
    text_lm_weight: float = field(
        default=0.5,
        metadata={
            "min": 0,
            "help": "weight of the text-only LM loss on general English sentences (data/english.py); 0 = off",
        },
    )
    mlm_weight: float = field(
        default=0.5,
        metadata={
            "min": 0,
            "help": "weight of a text-only masked-LM loss of the text encoder on "
            "those sentences (BERT's objective); 0 = off",
        },
    )
    text_lm_reads_encoder: bool = field(
        default=True,
        metadata={
            "help": "the text-only decoder LM reads, through its "
            "cross-attention, the encoder states of the same sentence "
            "with half its words masked (BART's denoising, Lewis et al. "
            "2020). False = a decoder LM with no context"
        },
    )
    text_sentences: int = field(default=20000, metadata={"help": "general English sentences generated for that loss"})
    vocab_size: int = field(default=1200, metadata={"above": 0, "help": "WordPiece vocabulary size (upper bound)"})
    max_text_len: int = field(default=40, metadata={"above": 0, "help": "caption tokens kept, incl. specials"})
    threads: int = field(default=0, metadata={"min": 0, "help": "torch threads; 0 = all cores"})

    def __post_init__(self):
        check_values(self, "pretrain")  # each field's range (its metadata); below, what relates two fields
        if self.batch_size > self.scenes:
            raise UserError(f"pretrain: batch_size {self.batch_size} exceeds the {self.scenes} scenes")
        if max(self.text_lm_weight, self.mlm_weight) > 0 and self.text_sentences < self.batch_size:
            raise UserError("pretrain: text_sentences must be at least batch_size when text_lm_weight or mlm_weight "
                            "is on")
        preset(self.preset)  # unknown preset: fail before any work
