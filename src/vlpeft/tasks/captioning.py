"""Captioning as BLIP fine-tunes it: the image-grounded decoder reads "[DEC] <prompt> <caption> [SEP]"
and is trained with next-token cross-entropy on the caption tokens only (the prompt, e.g.
"a picture of", is given, not predicted). Inference decodes after the prompt (greedy or beam) and the
prompt is removed from the output. Scores: BLEU-4, ROUGE-L, CIDEr-D (+ METEOR with Java).

A training example is one image with its reference captions; each visit samples one reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import torch

from vlpeft.data.images import preprocess
from vlpeft.data.records import CaptionExample
from vlpeft.errors import UserError
from vlpeft.model.generate import generate
from vlpeft.tasks.base import Batch, TaskKind, pixel_encoder, register_kind
from vlpeft.tasks.metrics import caption_scores


@dataclass(frozen=True)
class CaptionOptions:
    prompt: str = field(default="", metadata={"help": "text the decoder starts from, not predicted and removed "
                                                      "from the output (BLIP on COCO: 'a picture of')"})
    num_beams: int = field(default=1, metadata={"help": "beam size for decoding (1 = greedy)"})
    max_new_tokens: int = field(default=30, metadata={"help": "most tokens decoded per caption (also capped by "
                                                              "the model's positions)"})

    def __post_init__(self):
        if self.num_beams < 1 or self.max_new_tokens < 1:
            raise ValueError("num_beams and max_new_tokens must be >= 1")


@dataclass(frozen=True)
class CaptionBatch(Batch):
    ids: torch.Tensor  # (B, L) [DEC] prompt caption [SEP], padded
    mask: torch.Tensor  # (B, L) 1 on tokens
    target_mask: torch.Tensor  # (B, L) 1 on the tokens the loss predicts (not [DEC], not the prompt)


def prompt_ids(tok, prompt: str) -> list[int]:
    """Token ids of the prompt (no specials)."""
    return tok.tokenizer.encode(prompt, add_special_tokens=False).ids if prompt else []


def caption_batch(examples: Sequence[CaptionExample], data, loaded, opts: CaptionOptions, max_len: int,
                  rng: np.random.Generator, pixels: bool = True) -> CaptionBatch:
    """One sampled reference per example; pixels (B, 3, S, S) unless `pixels` is False."""
    tok = loaded.tokenizer
    captions = [ex.captions[rng.integers(len(ex.captions))] for ex in examples]
    texts = [f"{opts.prompt} {c}".strip() for c in captions]
    ids, mask = tok.encode_batch(texts, max_len=max_len)  # (B, L): [CLS] prompt caption [SEP]
    ids[:, 0] = tok.dec_id
    target = mask.clone()
    target[:, : 1 + len(prompt_ids(tok, opts.prompt))] = 0  # [DEC] and the prompt are inputs, not targets
    image_ids = tuple(ex.image_id for ex in examples)
    px = preprocess([data.image(i) for i in image_ids], loaded.preprocess) if pixels else None
    return CaptionBatch(image_ids=image_ids, pixels=px, ids=ids, mask=mask, target_mask=target)


def caption_loss(model, batch: CaptionBatch, label_smoothing: float = 0.0, image_states=None) -> torch.Tensor:
    img = model.encode_image(batch.pixels) if image_states is None else image_states  # (B, N, D)
    return model.lm_loss(batch.ids, batch.mask, img, target_mask=batch.target_mask, label_smoothing=label_smoothing)


@torch.inference_mode()
def predict_captions(model, examples: Sequence[CaptionExample], data, loaded, opts: CaptionOptions,
                     max_len: int = 40, encode_images=None, batch_size: int = 64) -> list[str]:
    """One caption per example (prompt removed). `encode_images(image ids) -> (B, N, D)` replaces the
    plain image encoding (e.g. by cached frozen features). Images are encoded one chunk at a time."""
    tok = loaded.tokenizer
    encode = encode_images or pixel_encoder(model, data, loaded)
    device = next(model.parameters()).device
    start = [tok.dec_id] + prompt_ids(tok, opts.prompt)
    max_new = min(opts.max_new_tokens, model.cfg.text.max_positions - len(start))  # checked >= 2 by check_text
    out: list[str] = []
    for i in range(0, len(examples), batch_size):
        chunk = examples[i:i + batch_size]
        img = encode([ex.image_id for ex in chunk])  # (b, N, D)
        start_ids = torch.tensor([start] * len(chunk), dtype=torch.long, device=device)  # (b, 1 + prompt)
        out += [tok.decode(t) for t in generate(model, img, start_ids=start_ids, max_new_tokens=max_new,
                                                num_beams=opts.num_beams)]
        del img  # before the next chunk is encoded: one chunk of states alive at a time
    return out


def score_captions(predictions: Sequence[str], examples: Sequence[CaptionExample], meteor=False) -> dict:
    return caption_scores(list(predictions), [list(ex.captions) for ex in examples], meteor=meteor)


def describe_captions(examples: Sequence[CaptionExample]) -> dict:
    per_image = [len(ex.captions) for ex in examples]
    return {"captions": sum(per_image), "per_example": "captions per image",
            "per_example_range": [min(per_image), max(per_image)] if per_image else [0, 0]}


def captions_from_rows(records, rows) -> list[CaptionExample]:
    """One example per image: the captions of every row of that image, in row order."""
    captions: dict[str, list[str]] = {}
    for rec in records:
        image_id = rows.image(rec)
        texts = rows.values(rec, "caption", "captions")
        if texts is None:
            rows.value(rec, "caption")  # the missing-field message
        if not texts:
            raise UserError(f"{rec.where}: empty captions list")
        captions.setdefault(image_id, []).extend(rows.text(rec, t, "caption") for t in texts)
    return [CaptionExample(i, rows.refs[i].path, tuple(c)) for i, c in captions.items()]


def held_out_captions(examples: Sequence[CaptionExample]) -> tuple[list[str], list[CaptionExample]]:
    """Each image's first caption as a prediction against its other captions (images with one caption
    left out): the score a caption written like the references gets, e.g. CIDEr-D's human agreement."""
    kept = [ex for ex in examples if len(ex.captions) >= 2]
    return [ex.captions[0] for ex in kept], [replace(ex, captions=ex.captions[1:]) for ex in kept]


KIND = register_kind(TaskKind(
    name="caption", metric="cider_d", parts=("vision", "text_decoder"), options=CaptionOptions,
    example=CaptionExample, batch=caption_batch, loss=caption_loss, predict=predict_captions,
    score=score_captions, baselines=lambda data, examples: {}, describe=describe_captions, stratum=None,
    candidates=None, fields=("caption", "captions"), from_rows=captions_from_rows,
    summary="image -> caption: the image-grounded decoder, next-token loss on the caption; CIDEr-D",
    given_tokens=lambda tok, opts: len(prompt_ids(tok, opts.prompt)), held_out=held_out_captions,
))
