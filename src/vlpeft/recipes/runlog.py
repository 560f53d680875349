"""What a fine-tuning run logs while it trains (`log: tensorboard`): TensorBoard event files in the run
folder itself, so that `tensorboard --logdir RUN` shows the run, `tensorboard --logdir PARENT` every
run folder under PARENT, and `tensorboard --logdir STUDY/runs` every cell of a study named by its id.

Tags (x axis: optimiser steps done, as in curve.json):
    train/loss, train/lr           every step: that step's training loss and learning rate
    val/<metric>, val/<metric>_se  every evaluation, step 0 included: curve.json's val_score, val_se
    result/test_<metric>, result/best_val_<metric>, result/converged (1 or 0), result/steps_to_best
                                   once, at the last step
    config, result (text)          the run's settings; its convergence state, how it stopped, its test
                                   score, in words

Events go through the optional package `tensorboard` (pip install 'vlpeft[tensorboard]'); a run asking
for them without it is refused before any work (`require_tensorboard`). A run's events replace the
ones an earlier run left in its folder, and its writer is closed however the run ends (its events
up to a failure stay: they show how it failed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlpeft.errors import UserError

INSTALL = "pip install 'vlpeft[tensorboard]'"
EVENTS = "events.out.tfevents.*"  # TensorBoard's event file names


def require_tensorboard(where: str = "log tensorboard") -> None:
    """A one-line UserError, before any work, when the tensorboard package is not installed."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise UserError(f"{where}: TensorBoard logging needs the tensorboard package, which is not installed "
                        f"({INSTALL})") from None


def clear_events(folder: Path) -> None:
    """Remove the event files an earlier run left in `folder`."""
    for path in folder.glob(EVENTS):
        path.unlink(missing_ok=True)


class RunLog:
    """The TensorBoard writer of one run; every method is a no-op when `folder` is None (no logging)."""

    def __init__(self, folder: Path | None, metric: str):
        self.metric, self.writer = metric, None
        if folder is None:
            return
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        clear_events(folder)
        self.writer = SummaryWriter(log_dir=str(folder), flush_secs=10)

    def config(self, config: dict[str, Any]) -> None:
        if self.writer is not None:
            text = json.dumps(config, indent=1, sort_keys=True, default=str)
            self.writer.add_text("config", "    " + text.replace("\n", "\n    "), 0)  # markdown code block

    def train(self, step: int, loss: float, lr: float) -> None:
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/lr", lr, step)

    def evaluation(self, row: dict[str, Any]) -> None:
        """One row of curve.json."""
        if self.writer is not None:
            self.writer.add_scalar(f"val/{self.metric}", row["val_score"], row["step"])
            self.writer.add_scalar(f"val/{self.metric}_se", row["val_se"], row["step"])
            self.writer.flush()

    def result(self, m: dict[str, Any]) -> None:
        """The run's record (metrics.json): its convergence and test score, at its last step."""
        if self.writer is None:
            return
        step, w = m["steps_done"], self.writer
        w.add_scalar(f"result/test_{self.metric}", m["test_score"], step)
        w.add_scalar(f"result/best_val_{self.metric}", m["best_val_score"], step)
        w.add_scalar("result/converged", float(bool(m["converged"])), step)
        w.add_scalar("result/steps_to_best", m["steps_to_best"], step)
        c = m["convergence"]
        rows = [("converged", m["converged"]), ("state", c["state"]), ("stopped_by", m["stopped_by"]),
                ("steps_to_best", m["steps_to_best"]), ("steps_done", m["steps_done"]),
                (f"test {self.metric}", m["test_score"]), (f"best validation {self.metric}", m["best_val_score"]),
                ("reason", c["reason"])]
        w.add_text("result", "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows), step)
        w.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["RunLog", "require_tensorboard", "clear_events", "INSTALL"]
