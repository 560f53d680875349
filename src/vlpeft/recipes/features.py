"""Frozen image features, computed once per image and reused.

When a run's method leaves the image encoder exactly as pre-trained (every vision parameter frozen
and none added: no prompts, prefixes, adapters, LoRA or IA3 vectors there) and the encoder has no
dropout, its output for an image is the same in every step of every epoch, in training and in
evaluation. `image_encoder` then returns a function that encodes each image once and remembers the
states (B, N, D) in this process, so the later epochs and the later runs of a study worker skip the
ViT entirely (and the training batches need no pixels).

The memory is per process, keyed by a digest of the vision weights, the data source and the image
id, and capped (VLPEFT_FEATURE_CACHE_MB, default 1024; 0 turns it off): past the cap images are
encoded as usual.
"""

from __future__ import annotations

import hashlib
import os
from typing import Callable, Sequence

import torch

from vlpeft.data.images import preprocess

_STORE: dict[tuple, torch.Tensor] = {}
_BYTES = 0


def cache_limit_bytes() -> int:
    return int(float(os.environ.get("VLPEFT_FEATURE_CACHE_MB", "1024")) * 2**20)


def vision_untouched(model) -> bool:
    """True when the image encoder computes exactly what the pre-trained one did, in any mode."""
    if model.vision is None or model.cfg.vision.dropout > 0:
        return False
    state = getattr(model, "peft_state", None)
    backbone = state.backbone_names if state is not None else None
    for name, p in model.vision.named_parameters():
        if p.requires_grad or (backbone is not None and f"vision.{name}" not in backbone):
            return False
    return True


def vision_digest(model) -> str:
    h = hashlib.sha1()
    for name, t in sorted(model.vision.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def image_encoder(model, task, pp, source: str) -> Callable[[Sequence[str]], torch.Tensor]:
    """image ids -> image states (B, N, D), each image encoded once (see module doc). Only for a
    model whose vision encoder is untouched."""
    if not vision_untouched(model):
        raise ValueError("image_encoder: the vision encoder is trained or modified; its states cannot be cached")

    def plain(ids: Sequence[str]) -> torch.Tensor:
        device = next(model.parameters()).device
        return model.encode_image(preprocess([task.image(i) for i in ids], pp).to(device))

    prefix = (vision_digest(model), source)

    def cached(ids: Sequence[str]) -> torch.Tensor:
        global _BYTES
        missing = [i for i in dict.fromkeys(ids) if (prefix, i) not in _STORE]
        fresh = {}
        for start in range(0, len(missing), 64):
            chunk = missing[start:start + 64]
            with torch.no_grad():  # not inference_mode: the states are inputs of graphs that backpropagate
                states = plain(chunk)  # (b, N, D)
            for i, s in zip(chunk, states):
                s = s.clone()
                fresh[i] = s
                if _BYTES + s.numel() * s.element_size() <= cache_limit_bytes():
                    _STORE[(prefix, i)] = s
                    _BYTES += s.numel() * s.element_size()
        return torch.stack([fresh[i] if i in fresh else _STORE[(prefix, i)] for i in ids])  # (B, N, D)

    return cached


def clear() -> None:
    global _BYTES
    _STORE.clear()
    _BYTES = 0
