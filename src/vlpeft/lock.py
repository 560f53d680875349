"""One output folder, one writer: `hold(folder, what)` takes an OS advisory lock (flock) on the
folder itself. A second `vlpeft study` on a study folder, or a second `vlpeft finetune` into a run
folder, is refused at once, naming the process that holds it (from `.vlpeft-<what>.holder`, written
in the folder while the lock is held). The kernel drops the lock when its process ends, however it
ends, so a command that was killed never blocks the next; a holder file it left behind is
overwritten. Readers (`vlpeft report`, `evaluate`) take no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from vlpeft.errors import UserError

HOLDER = ".vlpeft-{}.holder"
WHAT = {"study": "study", "finetune": "run"}  # the command -> what its folder holds


@contextlib.contextmanager
def hold(folder: str | os.PathLike, command: str = "study") -> Iterator[None]:
    """Hold `folder` (which must exist) for the life of the block; UserError if another process does."""
    folder = Path(folder)
    name = HOLDER.format(command)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{folder}: another vlpeft {command} is writing this {WHAT[command]} folder "
                            f"({holder(folder, name)}); let it finish or stop it, then run again") from None
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": " ".join(["vlpeft", *sys.argv[1:]])[:200]}
        with contextlib.suppress(OSError):  # who holds it, for the message above; the lock itself is the flock
            (folder / name).write_text(json.dumps(me), encoding="utf-8")
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                (folder / name).unlink()
    finally:
        os.close(fd)  # releases the lock


def holder(folder: Path, name: str, wait: float = 1.0) -> str:
    """Who holds `folder`, as one phrase (the holder writes its file just after taking the lock:
    wait up to `wait` seconds for it)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            h = json.loads((folder / name).read_text(encoding="utf-8"))
            return f"process {h['pid']} on {h['host']} since {h['since']}: {h['command']}"
        except (OSError, ValueError, KeyError, TypeError):
            if time.monotonic() > deadline:
                return "a process that is starting"
            time.sleep(0.05)
