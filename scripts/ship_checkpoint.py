"""Ship a tiny checkpoint with vlpeft as `tiny` (src/vlpeft/checkpoints/tiny/).

    .venv/bin/vlpeft pretrain --preset tiny --out runs/tiny-release
    .venv/bin/python scripts/ship_checkpoint.py runs/tiny-release

Copies the folder `vlpeft pretrain --preset tiny` made into src/vlpeft/checkpoints/tiny/ and writes
shipped.json beside it: the checkpoint and weights digests (the first is checked each time `tiny`
is loaded) and the commit, CPU, thread count and date the checkpoint was made with, from its
pretrain.json. Commit the folder; docs/models.md says what differs across CPU kinds.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
from pathlib import Path

from vlpeft.model.checkpoint import SHIPPED_DIR, SHIPPED_RECORD, checkpoint_digest, weights_digest
from vlpeft.recipes.record import cpu_model

FILES = ("config.json", "model.safetensors", "tokenizer.json", "pretrain.json", "evaluation.json")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="the folder `vlpeft pretrain --preset tiny --out FOLDER` made")
    source = Path(p.parse_args().source)
    record = json.loads((source / "pretrain.json").read_text())
    preset = (record.get("config") or {}).get("preset")
    if preset != "tiny":
        raise SystemExit(f"{source}: pre-trained with preset {preset!r}, not tiny")
    target = SHIPPED_DIR / "tiny"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
    env = record.get("environment", {})
    shipped = {"name": "tiny", "made_by": "vlpeft pretrain --preset tiny",
               "checkpoint_digest": checkpoint_digest(target), "weights_digest": weights_digest(target),
               "commit": env.get("git_commit"), "host": env.get("host"),
               # (pretrain.json names the CPU since 2026-12-06; before, this machine's, if it made the folder)
               "cpu": env.get("cpu") or (cpu_model() if env.get("host") == platform.node() else None),
               "threads": env.get("threads"), "torch": (env.get("versions") or {}).get("torch"),
               "seed": record.get("seed"), "steps": record.get("steps"), "train_seconds": record.get("train_seconds"),
               "made": env.get("time")}
    (target / SHIPPED_RECORD).write_text(json.dumps(shipped, indent=2, sort_keys=True) + "\n")
    print(json.dumps(shipped, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
