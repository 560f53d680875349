"""The study: a grid of fine-tuning runs declared in one YAML spec (spec.py), recorded in one SQLite
store (store.py), run by a local or Ray executor (executors.py) under one driver (runner.py), and
exported for readers (export.py).

The names below are imported on first use, so that reading a store (`vlpeft.study.store`, what the
analysis does) loads neither the runner nor what it runs."""

import importlib

_NAMES = {"load_spec": "spec", "parse_spec": "spec", "expand": "spec", "run_study": "runner", "dry_run": "runner"}


def __getattr__(name):
    if name in _NAMES:
        return getattr(importlib.import_module(f"vlpeft.study.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'vlpeft.study' has no attribute {name!r}")


__all__ = list(_NAMES)
