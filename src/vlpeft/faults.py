"""Crash points, for the reliability tests: prove that a kill at a given moment loses nothing.

`VLPEFT_CRASH=<point>:<n>` makes this process kill itself with SIGKILL (no clean-up, as `kill -9`
or the out-of-memory killer would) the n-th time it reaches <point>. Unset, `crash_point` costs a
dictionary lookup. Points:
    train_step       inside a training step of a run (in whichever process runs it)
    result_write     inside the store transaction recording a result, before COMMIT
    after_result     a result committed, the next one not yet started (driver)
"""

from __future__ import annotations

import os
import signal

POINTS = ("train_step", "result_write", "after_result", "run_weights_written")
_seen: dict[str, int] = {}


def crash_point(name: str) -> None:
    assert name in POINTS, name
    spec = os.environ.get("VLPEFT_CRASH")
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point not in POINTS:  # a misspelt point would never fire, and a kill test would pass without a kill
        raise RuntimeError(f"VLPEFT_CRASH={spec!r}: no crash point {point!r} (points: {', '.join(POINTS)})")
    if point != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
