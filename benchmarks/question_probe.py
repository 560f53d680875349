"""Do a checkpoint's question states tell easy-VQA questions apart, and can its answer decoder read
them? Probes on its frozen text towers.

    python benchmarks/question_probe.py [--model tiny] [--random] [--questions 1500]

The VQA answer decoder reads nothing but the image-grounded question states (tasks/vqa.py), so a
PEFT method can only answer as well as those states separate questions, and as well as the decoder
reads them. On `easyvqa-vqa` training questions (each with its image), for two feature sets (the
masked mean of the question states, and the [ENC] state):

- the mean pairwise cosine similarity (1 = every question encodes to the same direction);
- a 3-way question-type probe (colour / shape / yes-no);
- an answer probe (the question's answer, 13-way), next to the majority answer of each question type
  (what a model that reads only the type can score);

the probes being the logistic regression of shape_probe.py, trained on 70 %, scored on the rest.
Then the decoder's side: the entropy of each decoder block's cross-attention from [DEC] over the
question states (heads and questions averaged), against log(question length) for uniform attention.
`--random` probes the same architecture untrained.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from shape_probe import probe, probe_parser, probed_model  # noqa: E402


def cross_attention_entropy(model, dec_id: int, states: torch.Tensor, mask: torch.Tensor) -> list[tuple[float, float]]:
    """Per decoder block: (mean entropy of [DEC]'s cross-attention over the question, mean log of the
    question length). The decoder runs on [DEC] alone (no answer yet), as when the first answer word
    is predicted; a forward hook on each block's cross-attention recomputes its weights from the
    inputs it gets. states (B, Lq, D), mask (B, Lq)."""
    out = []

    def record(att, args, kwargs, _):
        q = att.split(att.q(args[0]))  # (B, H, 1, d)
        k, _ = att.project_kv(kwargs["context"])  # (B, H, Lq, d)
        keep = mask.bool()[:, None, None, :]  # (B, 1, 1, Lq)
        p = (q @ k.transpose(-1, -2) / att.head_dim ** 0.5).masked_fill(~keep, float("-inf")).softmax(-1)
        entropy = -(p * p.clamp_min(1e-12).log()).sum(-1)  # (B, H, 1)
        out.append((float(entropy.mean()), float(mask.sum(1).float().log().mean())))

    hooks = [b.cross_attn.register_forward_hook(record, with_kwargs=True) for b in model.text_decoder.blocks]
    try:
        model.decoder_logits(torch.full((states.shape[0], 1), dec_id), None, states, mask)
    finally:
        for h in hooks:
            h.remove()
    return out


def main() -> int:
    p = probe_parser(__doc__)
    p.add_argument("--questions", type=int, default=1500)
    args = p.parse_args()
    from vlpeft.data.images import preprocess
    from vlpeft.tasks import load_task
    from vlpeft.tasks.vqa import encode_questions, training_answer_key

    loaded, model = probed_model(args)
    task = load_task("easyvqa-vqa")
    examples = task.train[:args.questions]
    types = sorted({ex.question_type for ex in examples})
    labels = np.array([types.index(ex.question_type) for ex in examples])
    answers = sorted({training_answer_key(ex) for ex in examples})
    answer_labels = np.array([answers.index(training_answer_key(ex)) for ex in examples])
    feats: dict[str, list] = {"mean of question states": [], "[ENC] state": []}
    entropies = []
    with torch.no_grad():
        for i in range(0, len(examples), 250):
            chunk = examples[i:i + 250]
            img = model.encode_image(preprocess([task.image(ex.image_id) for ex in chunk], loaded.preprocess))
            ids, mask = encode_questions(loaded.tokenizer, [ex.question for ex in chunk], 40)
            states = model.encode_text(ids, mask, img)  # (B, L, D)
            feats["mean of question states"].append((states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True))
            feats["[ENC] state"].append(states[:, 0])
            entropies.append(cross_attention_entropy(model, loaded.tokenizer.dec_id, states, mask))
    train = np.random.default_rng(0).random(len(examples)) < 0.7
    majority = np.zeros(len(examples), dtype=int)  # the commonest training answer of each question type
    for t in range(len(types)):
        values, counts = np.unique(answer_labels[train & (labels == t)], return_counts=True)
        majority[labels == t] = values[counts.argmax()]
    print(f"{args.model}{' (untrained)' if args.random else ''}: {len(examples)} questions, types {types}, "
          f"{len(answers)} answers; majority answer per type: {float((majority == answer_labels)[~train].mean()):.3f}")
    for name, parts in feats.items():
        x = torch.cat(parts)  # (N, D)
        unit = torch.nn.functional.normalize(x, dim=1)
        cosine = float((unit @ unit.t()).mean())
        acc = float((probe(x.numpy(), labels, train, len(types)) == labels[~train]).mean())
        ans = float((probe(x.numpy(), answer_labels, train, len(answers)) == answer_labels[~train]).mean())
        print(f"  {name:26} mean cosine {cosine:.3f}   question-type probe {acc:.3f}   answer probe {ans:.3f}")
    per_block = np.array(entropies).mean(0)  # (blocks, 2), chunks weighted equally
    for i, (entropy, uniform) in enumerate(per_block):
        print(f"  decoder block {i}: [DEC] cross-attention entropy over the question {entropy:.2f} nats "
              f"(uniform {uniform:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
