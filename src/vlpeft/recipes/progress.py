"""Progress of a long command (pretrain, finetune, a study): tqdm's live bar on a terminal, plain lines
in a log.

A tqdm bar redraws itself with carriage returns, which a log file keeps as one endless line of bars.
So the bar is drawn only when stderr (where tqdm draws) is a terminal, and when stdout is not a
terminal (a log file, a pipe, a batch system's capture) a plain line goes to stdout at least every
PLAIN_SECONDS instead, written by a daemon thread so that a slow evaluation between two steps shows too:

    pretrain: step 1200/3000 (40%), 3.12 steps/s, ETA 9m37s; itc 1.23, itm 0.41, lm 2.31
    easyvqa-vqa lora: step 300 of at most 3000 (10%), 4.1 steps/s, ETA at most 11m00s; loss 1.9, val 0.48

`VLPEFT_PROGRESS_SECONDS` sets PLAIN_SECONDS (tests lower it, or monkeypatch the constant: it is read
when a progress starts). Whoever starts one closes it (`with`, or a finally): the thread must not
outlive a failed run.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Callable, Iterator

PLAIN_SECONDS = float(os.environ.get("VLPEFT_PROGRESS_SECONDS") or 30)


def is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def bar_shown() -> bool:
    """Whether a live tqdm bar is drawn: stderr, where tqdm draws, is a terminal."""
    return is_terminal(sys.stderr)


def lines_shown() -> bool:
    """Whether plain progress lines are printed: always, unless stdout is the terminal the bar is on."""
    return not (is_terminal(sys.stdout) and bar_shown())


def fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Heartbeat:
    """`describe()` written to stdout as one line every `every` seconds (default PLAIN_SECONDS) by a
    daemon thread, from construction until `close()`; a line written through `write` in between
    counts, so the next one comes `every` seconds after it."""

    def __init__(self, describe: Callable[[], str], every: float | None = None):
        self.describe, self.every = describe, PLAIN_SECONDS if every is None else float(every)
        self._stop, self._lock, self._last = threading.Event(), threading.Lock(), time.monotonic()
        self._thread = threading.Thread(target=self._run, name="vlpeft-progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(max(0.01, self._last + self.every - time.monotonic())):
            if time.monotonic() - self._last >= self.every:
                try:
                    line = self.describe()
                except Exception:  # a progress line is never worth a traceback: skip this one
                    self._last = time.monotonic()
                    continue
                try:
                    self.write(line)
                except (OSError, ValueError):  # stdout closed (a pipe's reader gone): nowhere to write
                    return

    def write(self, line: str) -> None:
        with self._lock:  # one write per line: lines of two threads never interleave
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            self._last = time.monotonic()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()


class Steps:
    """The progress of a loop of `total` steps, iterated like `tqdm(range(total))`: a tqdm bar on a
    terminal and plain lines in a log (either, both or, when not `enabled`, neither). `set_postfix`
    names the latest figures, `doing` what happens between steps (e.g. "validating"); `cap`: `total`
    is a cap the loop may stop before. Close it (`with`): its thread ends there."""

    def __init__(self, total: int, desc: str, enabled: bool = True, cap: bool = False):
        self.total, self.desc, self.cap, self.done = total, desc, cap, 0
        self.postfix: dict = {}
        self.stage: str | None = None
        self.started = time.monotonic()
        self.bar = None
        if enabled and bar_shown():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, mininterval=2.0)
        self.beat = Heartbeat(self.describe) if enabled and lines_shown() else None

    def __iter__(self) -> Iterator[int]:
        for step in range(self.total):
            self.done = step + 1  # the step under way counts (a line during its evaluation names it)
            yield step
            if self.bar is not None:
                self.bar.update(1)

    def set_postfix(self, **values) -> None:
        self.postfix = values
        if self.bar is not None:
            self.bar.set_postfix(**values)

    def doing(self, stage: str | None) -> None:
        self.stage = stage

    def describe(self) -> str:
        done, total = self.done, self.total
        rate = done / max(time.monotonic() - self.started, 1e-9)
        eta = fmt_seconds((total - done) / rate) if done else "?"
        of = f" of at most {total}" if self.cap else f"/{total}"
        line = (f"{self.desc}: step {done}{of} ({100 * done / max(total, 1):.0f}%), {rate:.3g} steps/s, "
                f"ETA {'at most ' if self.cap and done else ''}{eta}")
        figures = ", ".join(f"{k} {v}" for k, v in self.postfix.items())
        return line + (f"; {figures}" if figures else "") + (f" ({self.stage})" if self.stage else "")

    def close(self) -> None:
        if self.beat is not None:
            self.beat.close()
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Steps:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["PLAIN_SECONDS", "Heartbeat", "Steps", "bar_shown", "lines_shown", "fmt_seconds"]
