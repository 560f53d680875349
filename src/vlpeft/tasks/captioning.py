"""Captioning as BLIP fine-tunes it: the image-grounded decoder reads "[DEC] <prompt> <caption> [SEP]"
and is trained with next-token cross-entropy on the caption tokens only (the prompt, e.g.
"a picture of", is given, not predicted). Inference decodes after the prompt (greedy or beam) and the
prompt is removed from the output. Scores: BLEU-4, ROUGE-L, CIDEr-D (+ METEOR with Java).

A training example is one image with its reference captions; each visit samples one reference.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from vlpeft.data.images import preprocess
from vlpeft.data.records import CaptionExample
from vlpeft.model.generate import generate
from vlpeft.tasks.metrics import caption_scores


def prompt_ids(tok, prompt: str) -> list[int]:
    """Token ids of the prompt (no specials)."""
    return tok.tokenizer.encode(prompt, add_special_tokens=False).ids if prompt else []


def caption_batch(examples: Sequence[CaptionExample], task, tok, pp, prompt: str, max_len: int,
                  rng: np.random.Generator, pixels: bool = True) -> dict[str, torch.Tensor]:
    """pixels (B, 3, S, S) (left out when `pixels` is False: the image states come from elsewhere);
    ids/mask (B, L) = [DEC] prompt caption [SEP]; target_mask excludes the prompt."""
    captions = [ex.captions[rng.integers(len(ex.captions))] for ex in examples]
    texts = [f"{prompt} {c}".strip() for c in captions]
    ids, mask = tok.encode_batch(texts, max_len=max_len)  # (B, L): [CLS] prompt caption [SEP]
    ids[:, 0] = tok.dec_id
    target = mask.clone()
    target[:, : 1 + len(prompt_ids(tok, prompt))] = 0  # [DEC] and the prompt are inputs, not targets
    batch = {"ids": ids, "mask": mask, "target_mask": target}
    if pixels:
        batch["pixels"] = preprocess([task.image(ex.image_id) for ex in examples], pp)
    return batch


def caption_loss(model, batch, label_smoothing: float = 0.0, image_states=None) -> torch.Tensor:
    img = model.encode_image(batch["pixels"]) if image_states is None else image_states
    return model.lm_loss(batch["ids"], batch["mask"], img, target_mask=batch["target_mask"],
                         label_smoothing=label_smoothing)


@torch.inference_mode()
def predict_captions(model, examples: Sequence[CaptionExample], task, tok, pp, prompt: str = "",
                     num_beams: int = 1, max_new_tokens: int = 30, batch_size: int = 64,
                     encode_images=None) -> list[str]:
    """One caption per example (prompt removed). `encode_images(image ids) -> (B, N, D)` replaces the
    plain image encoding (e.g. by cached frozen features)."""
    p = [tok.dec_id] + prompt_ids(tok, prompt)
    out: list[str] = []
    for i in range(0, len(examples), batch_size):
        chunk = examples[i:i + batch_size]
        ids = [ex.image_id for ex in chunk]
        img = encode_images(ids) if encode_images else model.encode_image(preprocess([task.image(i) for i in ids], pp))
        start = torch.tensor([p] * len(chunk), dtype=torch.long)
        out += [tok.decode(t) for t in generate(model, img, start_ids=start, max_new_tokens=max_new_tokens,
                                                num_beams=num_beams)]
    return out


def score_captions(predictions: Sequence[str], examples: Sequence[CaptionExample], meteor=None) -> dict:
    return caption_scores(list(predictions), [list(ex.captions) for ex in examples], meteor=meteor)
