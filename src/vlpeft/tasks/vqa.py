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
Baseline: always answering the commonest training answer (`majority_baseline`).

A question with several human answers (VQAv2) trains on one answer per visit, drawn in proportion
to how many annotators gave it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from vlpeft.data.images import preprocess
from vlpeft.data.records import VQAExample
from vlpeft.errors import UserError
from vlpeft.model.generate import generate
from vlpeft.model.text import KVCache
from vlpeft.tasks.base import Batch, TaskKind, pixel_encoder, register_kind
from vlpeft.tasks.metrics import normalize_vqa_answer, vqa_scores
from vlpeft.tasks.splits import answer_type, candidate_answers


@dataclass(frozen=True)
class VQAOptions:
    inference: str = field(default="rank", metadata={"help": "rank (BLIP's candidate ranking) or generate (free "
                                                             "greedy answer)", "choices": ("rank", "generate")})
    rank_k: int = field(default=128, metadata={"help": "rank: candidates kept by their first token's likelihood "
                                                       "before whole answers are scored (BLIP: 128)"})
    max_answer_tokens: int = field(default=10, metadata={"help": "generate: most answer tokens decoded"})

    def __post_init__(self):
        if self.rank_k < 1 or self.max_answer_tokens < 1:
            raise ValueError("rank_k and max_answer_tokens must be >= 1")


@dataclass(frozen=True)
class VQABatch(Batch):
    q_ids: torch.Tensor  # (B, Lq) [ENC] question [SEP]
    q_mask: torch.Tensor  # (B, Lq)
    a_ids: torch.Tensor  # (B, La) [DEC] answer [SEP]
    a_mask: torch.Tensor  # (B, La)


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
    counts = Counter(normalize_vqa_answer(a, ex.keep_articles) for a in ex.answers)
    return max(sorted(counts), key=counts.get) if counts else ""


def training_answer(ex: VQAExample, rng: np.random.Generator) -> str:
    counts = Counter(normalize_vqa_answer(a, ex.keep_articles) for a in ex.answers)
    names = sorted(counts)
    p = np.array([counts[n] for n in names], dtype=float)
    return names[rng.choice(len(names), p=p / p.sum())]


def vqa_batch(examples: Sequence[VQAExample], data, loaded, opts: VQAOptions, max_len: int,
              rng: np.random.Generator, pixels: bool = True) -> VQABatch:
    """Questions and one sampled answer each; pixels (B, 3, S, S) unless `pixels` is False."""
    tok = loaded.tokenizer
    q_ids, q_mask = encode_questions(tok, [ex.question for ex in examples], max_len)
    a_ids, a_mask = encode_answers(tok, [training_answer(ex, rng) for ex in examples])
    image_ids = tuple(ex.image_id for ex in examples)
    px = preprocess([data.image(i) for i in image_ids], loaded.preprocess) if pixels else None
    return VQABatch(image_ids=image_ids, pixels=px, q_ids=q_ids, q_mask=q_mask, a_ids=a_ids, a_mask=a_mask)


def vqa_loss(model, batch: VQABatch, label_smoothing: float = 0.0, image_states=None) -> torch.Tensor:
    img = model.encode_image(batch.pixels) if image_states is None else image_states  # (B, N, D_v)
    q = model.encode_text(batch.q_ids, batch.q_mask, img)  # (B, Lq, D)
    return model.lm_loss(batch.a_ids, batch.a_mask, q, batch.q_mask, label_smoothing=label_smoothing)


@torch.inference_mode()
def candidate_logprobs(model, q_states, q_mask, cand_ids, cand_mask, k: int = 128
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep, scores), each (B, K): the candidates scored per question (all C, or BLIP's k) and their
    sum_t log p(a_t | a_<t, question), a = "[DEC] a_1 .. a_T [SEP]". q_states (B, Lq, D); cand_ids/mask
    (C, La), every row starting with [DEC].

    The [DEC] step is decoded once per question with a key/value cache; its next-token distribution
    gives log p(a_1) of every candidate (and, with C > k, BLIP's filter: the k candidates whose first
    token is likeliest), and its cache (the question's cross-attention keys/values, [DEC]'s
    self-attention keys/values) is shared by the question's K candidates, which are decoded from a_1
    on. The same sums as decoding each "[DEC] a [SEP]" whole, without recomputing what they share."""
    B, C, La = q_states.shape[0], cand_ids.shape[0], cand_ids.shape[1]
    cache = KVCache()
    first = model.decoder_logits(cand_ids[:1, :1].expand(B, 1), None, q_states, q_mask, cache=cache)
    first = first[:, 0].float().log_softmax(-1)  # (B, V): log p(a_1 | [DEC], question)
    first_cand = first[:, cand_ids[:, 1]]  # (B, C)
    if C > k:  # BLIP: keep the k candidates with the likeliest first token
        keep = first_cand.topk(k, dim=1).indices  # (B, k)
    else:
        keep = torch.arange(C, device=q_states.device).expand(B, C)  # (B, C)
    K = keep.shape[1]
    scores = first_cand.gather(1, keep) * cand_mask[keep][..., 1].to(first.dtype)  # (B, K)
    if La > 2:  # a_2 .. [SEP], read from the positions a_1 .. a_T
        ids, mask = cand_ids[keep].flatten(0, 1), cand_mask[keep].flatten(0, 1)  # (B*K, La)
        rows = torch.arange(B, device=q_states.device).repeat_interleave(K)  # (B*K,) each candidate's question
        cache.reorder(rows)
        q_rows = None if q_mask is None else q_mask.index_select(0, rows)
        logits = model.decoder_logits(ids[:, 1:-1], mask[:, 1:-1], q_states.index_select(0, rows), q_rows,
                                      cache=cache)  # (B*K, La-2, V)
        tok = logits.float().log_softmax(-1).gather(-1, ids[:, 2:, None]).squeeze(-1)  # (B*K, La-2)
        scores = scores + (tok * mask[:, 2:].to(tok.dtype)).sum(-1).view(B, K)
    return keep, scores


@torch.inference_mode()
def rank_answers(model, q_states, q_mask, cand_ids, cand_mask, k: int = 128) -> torch.Tensor:
    """Best candidate index per question (B,): the likeliest of `candidate_logprobs`."""
    keep, scores = candidate_logprobs(model, q_states, q_mask, cand_ids, cand_mask, k)
    return keep.gather(1, scores.argmax(1, keepdim=True)).squeeze(1)  # (B,)


@torch.inference_mode()
def predict_answers(model, examples: Sequence[VQAExample], data, loaded, opts: VQAOptions, max_len: int = 40,
                    encode_images=None, batch_size: int = 64) -> list[str]:
    """One answer per question. Images are taken `batch_size` at a time: each chunk is encoded once
    (by `encode_images(ids)` if given), every question about it is answered, and its states are
    dropped before the next chunk, so memory does not grow with the split."""
    tok = loaded.tokenizer
    device = next(model.parameters()).device
    encode = encode_images or pixel_encoder(model, data, loaded)
    answers = data.answers
    if opts.inference == "rank":
        cand_ids, cand_mask = (t.to(device) for t in encode_answers(tok, answers))  # (C, La)
    questions_of: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        questions_of.setdefault(ex.image_id, []).append(i)
    image_order = list(questions_of)
    out: list[str] = [""] * len(examples)
    for start in range(0, len(image_order), batch_size):
        chunk = image_order[start:start + batch_size]
        img = encode(chunk)  # (b, N, D_v)
        row = {image_id: j for j, image_id in enumerate(chunk)}
        asked = [i for image_id in chunk for i in questions_of[image_id]]
        for q_start in range(0, len(asked), batch_size):
            idx = asked[q_start:q_start + batch_size]
            pick = torch.tensor([row[examples[i].image_id] for i in idx], device=device)
            q_ids, q_mask = (t.to(device) for t in encode_questions(tok, [examples[i].question for i in idx], max_len))
            q = model.encode_text(q_ids, q_mask, img.index_select(0, pick))  # (B, Lq, D)
            if opts.inference == "rank":
                best = rank_answers(model, q, q_mask, cand_ids, cand_mask, opts.rank_k).tolist()
                texts = [answers[j] for j in best]
            else:
                texts = [tok.decode(t) for t in generate(model, q, q_mask, max_new_tokens=opts.max_answer_tokens)]
            for i, text in zip(idx, texts):
                out[i] = text
        del img
    return out


def score_answers(predictions: Sequence[str], examples: Sequence[VQAExample]) -> dict:
    return vqa_scores(list(predictions), [list(ex.answers) for ex in examples],
                      groups=[ex.question_type for ex in examples],
                      keep_articles=any(ex.keep_articles for ex in examples))  # one task: one normalisation


def majority_baseline(data, examples: Sequence[VQAExample]) -> dict:
    """The floor any VQA model must clear: always answer the commonest training answer."""
    if not data.answers:
        return {}
    majority = data.answers[0]
    return {"majority_answer": majority,
            "majority_baseline": score_answers([majority] * len(examples), examples)["vqa_accuracy"]}


def describe_questions(examples: Sequence[VQAExample]) -> dict:
    per_question = [len(ex.answers) for ex in examples]
    return {"questions": len(examples), "per_example": "answers per question",
            "per_example_range": [min(per_question), max(per_question)] if per_question else [0, 0],
            "distinct_answers": len({normalize_vqa_answer(a, ex.keep_articles) for ex in examples for a in ex.answers})}


def questions_from_rows(records, rows) -> list[VQAExample]:
    """One example per row: the question, its answers (a list of strings or of {"answer": ...}
    objects, or one answer), an id (given, or "q<row index>") that must not repeat."""
    examples, ids = [], {}
    vanishing: list[tuple[str, str]] = []  # (row, answer) whose answer normalises to nothing
    for k, rec in enumerate(records):
        image_id = rows.image(rec)
        question = rows.text(rec, rows.value(rec, "question"), "question")
        raw = rows.values(rec, "answer", "answers")
        if raw is None:
            raise UserError(f"{rec.where}: the question has no answer (no field {rows.fields['answers']!r} or "
                            f"{rows.fields['answer']!r})")
        if not raw:
            raise UserError(f"{rec.where}: the question has no answer (empty list)")
        answers = tuple(rows.text(rec, a.get("answer") if isinstance(a, dict) else a, "answer") for a in raw)
        vanishing += [(rec.where, a) for a in answers if not normalize_vqa_answer(a, rows.keep_articles)]
        qid = rows.value(rec, "question_id", required=False)
        qid = str(qid) if qid not in (None, "") else f"q{k}"
        if qid in ids:
            raise UserError(f"{rec.where}: question id {qid!r} appears twice (also at {ids[qid]})")
        ids[qid] = rec.where
        qtype = rows.value(rec, "question_type", required=False)
        majority = max(sorted(set(answers)), key=answers.count)
        examples.append(
            VQAExample(
                qid,
                image_id,
                rows.refs[image_id].path,
                question,
                answers,
                question_type=str(qtype) if qtype else "",
                answer_type=answer_type(majority.lower()),
                keep_articles=rows.keep_articles,
            )
        )
    if vanishing:  # "A", "The", "-": the VQA normalisation drops articles and punctuation
        where, answer = vanishing[0]
        more = f" ({len(vanishing)} answers in all)" if len(vanishing) > 1 else ""
        raise UserError(f"{where}: answer {answer!r} is empty after VQA answer normalisation (articles and "
                        f"punctuation are dropped), so it could never be predicted nor trained on{more}; "
                        "write such answers as words ('option a'), or set answer_normalisation: keep-articles "
                        "in the task file")
    return examples


KIND = register_kind(TaskKind(
    name="vqa", metric="vqa_accuracy", parts=("vision", "text_encoder", "text_decoder"), options=VQAOptions,
    example=VQAExample, batch=vqa_batch, loss=vqa_loss, predict=predict_answers, score=score_answers,
    baselines=majority_baseline, describe=describe_questions, stratum=training_answer_key,
    candidates=candidate_answers, fields=("question", "answers", "answer", "question_id", "question_type"),
    from_rows=questions_from_rows,
    summary="image + question -> answer: image-grounded question encoder, answer decoder; VQA accuracy",
    ceiling=100.0,
))
