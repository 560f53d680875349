"""A short check of the GPU path, shaped like `paper-blip` (BLIP-base sizes, bf16 autocast, a
captioning and a VQA task, both given as users' task files), for a machine with a CUDA device:

    python benchmarks/cuda_smoke.py [--config base|tiny] [--device cuda] [--steps 5] [--out DIR]

For each task kind it fine-tunes LoRA for a few steps (frozen ViT: the feature cache is on, as in a
study) and one method that trains the ViT (so pixels go to the device in every step), evaluates on
validation and test, re-scores the saved weights with `evaluate_run`, and reports per run: device,
steps, train and evaluation seconds, peak CUDA memory, the test score and whether the re-score is
equal. The checkpoint has random weights (no download): BLIP-base sizes with the tiny tokenizer
(`common.base_config`). The task files are written from synthetic scenes (JSON Lines captions, CSV
questions), so the task-file readers run on the GPU machine too. `--config tiny --device cpu` runs
the same code on a CPU in seconds.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def write_task_files(folder: Path, n_images: int) -> dict[str, Path]:
    """A captioning task file (JSON Lines) and a VQA task file (CSV) over `n_images` synthetic scenes."""
    from PIL import Image

    from vlpeft.data.scenes import generate_scenes

    (folder / "images").mkdir(parents=True, exist_ok=True)
    scenes = generate_scenes(n_images, seed=7, split="test")
    for s in scenes:
        Image.fromarray(s.image).save(folder / "images" / f"{s.scene_id}.png")
    with open(folder / "captions.jsonl", "w") as f:
        for s in scenes:
            for c in s.captions:
                f.write(json.dumps({"image": f"images/{s.scene_id}.png", "caption": c}) + "\n")
    with open(folder / "qa.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "question", "answer"])
        for s in scenes:
            for qa in s.qa:
                w.writerow([f"images/{s.scene_id}.png", qa.question, qa.answer])
    files = {"caption": folder / "captions.yaml", "vqa": folder / "qa.yaml"}
    files["caption"].write_text("name: smoke-captions\nkind: caption\nformat: jsonl\npath: captions.jsonl\n")
    files["vqa"].write_text("name: smoke-vqa\nkind: vqa\nformat: csv\npath: qa.csv\n")
    return files


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=["base", "tiny"], default="base")
    p.add_argument("--device", default="cuda")
    p.add_argument("--precision", default=None, help="default: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--images", type=int, default=200, help="synthetic scenes in each task file")
    p.add_argument("--out", help="folder for smoke.json")
    args = p.parse_args()
    from common import base_model, tiny_model
    from vlpeft.recipes.evaluate import evaluate_run
    from vlpeft.recipes.finetune import FinetuneConfig, finetune

    precision = args.precision or ("bf16" if args.device.startswith("cuda") else "fp32")
    tmp = Path(tempfile.mkdtemp(prefix="vlpeft-smoke-"))
    t0 = time.perf_counter()
    tiny, tiny_path, _ = tiny_model(str(tmp / "no-such-checkpoint"), tmp)
    model_path = tiny_path if args.config == "tiny" else base_model(tiny, tmp).source
    tasks = write_task_files(tmp / "data", args.images)
    setup_seconds = round(time.perf_counter() - t0, 1)
    rows = []
    for kind, task_file in tasks.items():
        for method, budget, options in (("lora", "8", {}), ("lora", "4", {"placement": ["vision", "text_decoder"]})):
            cfg = FinetuneConfig(model=model_path, task=str(task_file), method=method, budget=budget,
                                 method_options=options, length_policy="steps", steps=args.steps, batch_size=16,
                                 evals=1, val_limit=32, test_limit=64, device=args.device, precision=precision,
                                 feature_cache_dir=str(tmp / "features"))
            run = tmp / "runs" / f"{kind}-{method}-{'+'.join(options.get('placement', ['text']))}"
            m = finetune(cfg, run, progress=False)
            again = evaluate_run(model_path, run)
            rows.append({"task": m["task"], "method": method, "placement": options.get("placement", "default"),
                         "device": m["environment"]["device"], "precision": precision, "steps": m["steps_done"],
                         "train_seconds": m["train_seconds"], "eval_seconds": m["eval_seconds"],
                         "peak_memory_mb": m["peak_memory_mb"], "test_score": m["test_score"],
                         "rescored_equal": again["test_score"] == m["test_score"]})
            print(json.dumps(rows[-1]), flush=True)
    report = {"config": args.config, "device": args.device, "torch": torch.__version__,
              "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
              "setup_seconds": setup_seconds, "runs": rows, "seconds": round(time.perf_counter() - t0, 1)}
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "smoke.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}))
    return 0 if all(r["rescored_equal"] and r["steps"] == args.steps for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
