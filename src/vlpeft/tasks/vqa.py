"""VQA as BLIP fine-tunes it (Li et al. 2022, LAVIS `blip_vqa`): the question, first token [ENC], is
encoded by the text encoder with cross-attention to the image; the answer decoder reads
"[DEC] <answer> [SEP]" with cross-attention to the question states and is trained with next-token
cross-entropy on the answer.

Inference:
- "rank" (BLIP's default): score every candidate answer a by log p(a | image, question) (sum over its
  tokens) and take the best. With many candidates (VQAv2: 3,128) BLIP first keeps the k candidates
  whose first token is likeliest (k = 128) and scores only those; the same is done here.
- "generate": greedy decoding of a free answer.
Metric: the official VQA accuracy (`tasks.metrics.vqa_scores`), in [0, 100].

A question with several human answers (VQAv2) trains on one answer per visit, drawn in proportion
to how many annotators gave it.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np
import torch

from vlpeft.data.images import preprocess
from vlpeft.data.records import VQAExample
from vlpeft.model.generate import generate
from vlpeft.tasks.metrics import normalize_vqa_answer, vqa_scores


def encode_questions(tok, questions: Sequence[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids, mask = tok.encode_batch(list(questions), max_len=max_len)  # (B, Lq): [CLS] question [SEP]
    ids[:, 0] = tok.enc_id
    return ids, mask


def encode_answers(tok, answers: Sequence[str], max_len: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    ids, mask = tok.encode_batch(list(answers), max_len=max_len)  # (B, La): [CLS] answer [SEP]
    ids[:, 0] = tok.dec_id
    return ids, mask


def training_answer_key(ex: VQAExample) -> str:
    """The question's most frequent normalised answer: the stratum for data subsets."""
    counts = Counter(normalize_vqa_answer(a) for a in ex.answers)
    return max(sorted(counts), key=counts.get) if counts else ""


def training_answer(ex: VQAExample, rng: np.random.Generator) -> str:
    counts = Counter(normalize_vqa_answer(a) for a in ex.answers)
    names = sorted(counts)
    p = np.array([counts[n] for n in names], dtype=float)
    return names[rng.choice(len(names), p=p / p.sum())]


def vqa_batch(examples: Sequence[VQAExample], task, tok, pp, max_len: int, rng: np.random.Generator,
              pixels: bool = True) -> dict:
    """pixels (B, 3, S, S) (left out when `pixels` is False); q_ids/q_mask (B, Lq); a_ids/a_mask (B, La)."""
    q_ids, q_mask = encode_questions(tok, [ex.question for ex in examples], max_len)
    a_ids, a_mask = encode_answers(tok, [training_answer(ex, rng) for ex in examples])
    batch = {"q_ids": q_ids, "q_mask": q_mask, "a_ids": a_ids, "a_mask": a_mask}
    if pixels:
        batch["pixels"] = preprocess([task.image(ex.image_id) for ex in examples], pp)
    return batch


def vqa_loss(model, batch, label_smoothing: float = 0.0, image_states=None) -> torch.Tensor:
    img = model.encode_image(batch["pixels"]) if image_states is None else image_states
    q = model.encode_text(batch["q_ids"], batch["q_mask"], img)  # (B, Lq, D)
    return model.lm_loss(batch["a_ids"], batch["a_mask"], q, batch["q_mask"], label_smoothing=label_smoothing)


@torch.inference_mode()
def rank_answers(model, q_states, q_mask, cand_ids, cand_mask, k: int = 128) -> torch.Tensor:
    """Best candidate index per question. q_states (B, Lq, D); cand_ids/mask (C, La) start with [DEC]."""
    B, C = q_states.shape[0], cand_ids.shape[0]
    if C > k:  # BLIP: keep the k candidates with the likeliest first token
        first = model.decoder_logits(cand_ids[:1, :1].expand(B, 1), None, q_states, q_mask)[:, 0].log_softmax(-1)
        keep = first[:, cand_ids[:, 1]].topk(k, dim=1).indices  # (B, k)
    else:
        keep = torch.arange(C).expand(B, C)
    K = keep.shape[1]
    ids, mask = cand_ids[keep].flatten(0, 1), cand_mask[keep].flatten(0, 1)  # (B*K, La)
    ctx = q_states.repeat_interleave(K, 0)  # (B*K, Lq, D)
    ctx_mask = q_mask.repeat_interleave(K, 0)
    scores = model.sequence_logprob(ids, mask, ctx, ctx_mask).view(B, K)  # (B, K)
    return keep.gather(1, scores.argmax(1, keepdim=True)).squeeze(1)  # (B,)


@torch.inference_mode()
def predict_answers(model, examples: Sequence[VQAExample], task, tok, pp, answers: Sequence[str],
                    mode: str = "rank", max_len: int = 40, batch_size: int = 64, k: int = 128,
                    encode_images=None) -> list[str]:
    """One answer per question. Each distinct image is encoded once (by `encode_images(ids)` if given)."""
    cand_ids, cand_mask = encode_answers(tok, answers) if mode == "rank" else (None, None)
    out: list[str] = []
    image_ids = list(dict.fromkeys(ex.image_id for ex in examples))
    states: dict[str, torch.Tensor] = {}
    for i in range(0, len(image_ids), batch_size):
        chunk = image_ids[i:i + batch_size]
        img = encode_images(chunk) if encode_images else model.encode_image(preprocess([task.image(x) for x in chunk], pp))
        states.update(zip(chunk, img))
    for i in range(0, len(examples), batch_size):
        chunk = examples[i:i + batch_size]
        img = torch.stack([states[ex.image_id] for ex in chunk])  # (B, S, D)
        q_ids, q_mask = encode_questions(tok, [ex.question for ex in chunk], max_len)
        q = model.encode_text(q_ids, q_mask, img)
        if mode == "rank":
            out += [answers[j] for j in rank_answers(model, q, q_mask, cand_ids, cand_mask, k).tolist()]
        else:
            out += [tok.decode(t) for t in generate(model, q, q_mask, max_new_tokens=10)]
    return out


def score_answers(predictions: Sequence[str], examples: Sequence[VQAExample]) -> dict:
    return vqa_scores(list(predictions), [list(ex.answers) for ex in examples],
                      groups=[ex.question_type for ex in examples])
