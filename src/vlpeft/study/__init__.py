"""The study: a grid of fine-tuning runs declared in one YAML spec (spec.py), recorded in one SQLite
store (`vlpeft.store`, a utility the analysis reads too), run by a local or Ray executor
(executors.py) under one driver (runner.py), and exported for readers (export.py)."""

from vlpeft.study.runner import dry_run, run_study
from vlpeft.study.spec import expand, load_spec, parse_spec

__all__ = ["load_spec", "parse_spec", "expand", "run_study", "dry_run"]
