"""How to split the cores between study workers: N workers x T threads, side by side in one run.

    python benchmarks/workers.py [--model tiny] [--json]

Runs the same small grid (the quick preset's two tasks, LoRA and prefix, 400 examples, 2 seeds: 8
runs) once per split and prints each wall time and its ratio to the first split. Only ratios
measured in the same invocation are comparable: the machines are shared.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

SPLITS = [(2, 1), (1, 2)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    from vlpeft.study import load_spec, run_study
    from vlpeft.study.spec import PRESET_DIR

    quick = yaml.safe_load((PRESET_DIR / "quick.yaml").read_text())
    spec = dict(quick, name="bench-workers", model=args.model, pretrain=None, data_sizes=[400], seeds=[0, 1],
                methods={"lora": {"budgets": [8]}, "prefix": {"budgets": [4]}})
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for workers, threads in SPLITS:
            path = Path(tmp) / f"spec-{workers}x{threads}.yaml"
            path.write_text(
                yaml.safe_dump(dict(spec, executor={"kind": "local", "workers": workers, "threads": threads}))
            )
            t0 = time.perf_counter()
            summary = run_study(
                load_spec(str(path)), Path(tmp) / f"study-{workers}x{threads}", quiet=True, log=lambda *a: None
            )
            results.append({"workers": workers, "threads": threads, "seconds": round(time.perf_counter() - t0, 1),
                            "runs": summary["ran"]})
    for r in results:
        r["ratio_to_first"] = round(r["seconds"] / results[0]["seconds"], 3)
    if args.json:
        print(json.dumps({"cores": os.cpu_count(), "splits": results}, indent=1))
    else:
        for r in results:
            print(f"{r['workers']} worker(s) x {r['threads']} thread(s): {r['seconds']:7.1f} s for {r['runs']} runs "
                  f"(x{r['ratio_to_first']:.2f} of the first)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
