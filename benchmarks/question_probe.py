"""Do a checkpoint's question states tell easy-VQA questions apart? Probes on its frozen text encoder.

    python benchmarks/question_probe.py [--model runs/tiny] [--random] [--questions 1500]

The VQA answer decoder reads nothing but the image-grounded question states (tasks/vqa.py), so a
PEFT method can only answer as well as those states separate questions. On `easyvqa-vqa` training
questions (each with its image), two figures per feature set (the masked mean of the question
states, and the [ENC] state): the mean pairwise cosine similarity (1 = every question encodes to
the same direction), and a 3-way question-type probe (colour / shape / yes-no; the same logistic
regression as shape_probe.py, trained on 70 %, scored on the rest). `--random` probes the same
architecture untrained.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from shape_probe import probe, probe_parser, probed_model  # noqa: E402


def main() -> int:
    p = probe_parser(__doc__)
    p.add_argument("--questions", type=int, default=1500)
    args = p.parse_args()
    from vlpeft.data.images import preprocess
    from vlpeft.tasks.builtin import load_task
    from vlpeft.tasks.vqa import encode_questions

    loaded, model = probed_model(args)
    task = load_task("easyvqa-vqa")
    examples = task.train[:args.questions]
    types = sorted({ex.question_type for ex in examples})
    labels = np.array([types.index(ex.question_type) for ex in examples])
    feats: dict[str, list] = {"mean of question states": [], "[ENC] state": []}
    with torch.no_grad():
        for i in range(0, len(examples), 250):
            chunk = examples[i:i + 250]
            img = model.encode_image(preprocess([task.image(ex.image_id) for ex in chunk], loaded.preprocess))
            ids, mask = encode_questions(loaded.tokenizer, [ex.question for ex in chunk], 40)
            states = model.encode_text(ids, mask, img)  # (B, L, D)
            feats["mean of question states"].append((states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True))
            feats["[ENC] state"].append(states[:, 0])
    train = np.random.default_rng(0).random(len(examples)) < 0.7
    print(f"{args.model}{' (untrained)' if args.random else ''}: {len(examples)} questions, types {types}")
    for name, parts in feats.items():
        x = torch.cat(parts)  # (N, D)
        unit = torch.nn.functional.normalize(x, dim=1)
        cosine = float((unit @ unit.t()).mean())
        acc = float((probe(x.numpy(), labels, train, len(types)) == labels[~train]).mean())
        print(f"  {name:26} mean cosine {cosine:.3f}   question-type probe {acc:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
