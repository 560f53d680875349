"""Batched decoding with a key/value cache: greedy and beam search.

Both start from `start_ids` (B, L0): [DEC] optionally followed by a prompt ("a picture of"), and stop
a sequence at [SEP]. They return, per input, the generated token ids after the start ids, without
the final [SEP].
"""

from __future__ import annotations

import torch

from vlpeft.model.blip import Blip
from vlpeft.model.text import KVCache


@torch.no_grad()
def generate(
    model: Blip,
    context: torch.Tensor,  # (B, S, D) image states (captioning) or question states (VQA)
    context_mask: torch.Tensor | None = None,  # (B, S)
    start_ids: torch.Tensor | None = None,  # (B, L0); default [[bos]] * B
    max_new_tokens: int = 20,
    num_beams: int = 1,
    length_penalty: float = 1.0,
) -> list[list[int]]:
    cfg = model.cfg.text
    B = context.shape[0]
    if start_ids is None:
        start_ids = torch.full((B, 1), cfg.bos_id, dtype=torch.long, device=context.device)
    if num_beams <= 1:
        return _greedy(model, context, context_mask, start_ids, max_new_tokens)
    return _beam(model, context, context_mask, start_ids, max_new_tokens, num_beams, length_penalty)


def _greedy(model, context, context_mask, ids, max_new_tokens) -> list[list[int]]:
    sep, pad = model.cfg.text.sep_id, model.cfg.text.pad_id
    B = ids.shape[0]
    cache = KVCache()
    step_in, step_mask = ids, torch.ones_like(ids)
    done = torch.zeros(B, dtype=torch.bool, device=ids.device)
    out = []
    for _ in range(max_new_tokens):
        logits = model.decoder_logits(step_in, step_mask, context, context_mask, cache=cache)[:, -1]  # (B, V)
        nxt = logits.argmax(-1).masked_fill(done, pad)  # (B,)
        out.append(nxt)
        done |= nxt == sep
        if bool(done.all()):
            break
        step_in, step_mask = nxt[:, None], torch.ones(B, 1, dtype=torch.long, device=ids.device)
    tokens = torch.stack(out, 1).tolist() if out else [[] for _ in range(B)]
    return [_cut(row, sep, pad) for row in tokens]


def _beam(model, context, context_mask, ids, max_new_tokens, K, length_penalty) -> list[list[int]]:
    """Standard beam search: keep the K best partial sequences per input by summed log-probability;
    a finished hypothesis is scored sum_logp / length**length_penalty."""
    sep, pad = model.cfg.text.sep_id, model.cfg.text.pad_id
    B, dev = ids.shape[0], ids.device
    def rep(t):
        return None if t is None else t.repeat_interleave(K, 0)
    context, context_mask, ids = rep(context), rep(context_mask), rep(ids)  # (B*K, ...)
    scores = torch.zeros(B, K, device=dev)
    scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
    seqs = torch.zeros(B * K, 0, dtype=torch.long, device=dev)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
    cache = KVCache()
    step_in, step_mask = ids, torch.ones_like(ids)
    stopped_early = False
    for t in range(max_new_tokens):
        logp = (
            model.decoder_logits(step_in, step_mask, context, context_mask, cache=cache)[:, -1].float().log_softmax(-1)
        )
        V = logp.shape[-1]
        cand = (scores.view(B * K, 1) + logp).view(B, K * V)  # (B, K*V)
        top, idx = cand.topk(2 * K, dim=-1)  # (B, 2K): room for K live beams after removing finished ones
        beam_idx, tok = idx // V, idx % V
        new_scores = torch.full((B, K), float("-inf"), device=dev)
        new_src = torch.zeros(B, K, dtype=torch.long, device=dev)
        new_tok = torch.full((B, K), pad, dtype=torch.long, device=dev)
        for b in range(B):
            j = 0
            for s, bi, tk in zip(top[b].tolist(), beam_idx[b].tolist(), tok[b].tolist()):
                if s == float("-inf"):
                    break
                if tk == sep:
                    hyp = seqs[b * K + bi].tolist()
                    finished[b].append((s / max(len(hyp) + 1, 1) ** length_penalty, hyp))
                    continue
                new_scores[b, j], new_src[b, j], new_tok[b, j] = s, b * K + bi, tk
                j += 1
                if j == K:
                    break
        scores = new_scores
        src = new_src.view(-1)
        seqs = torch.cat([seqs.index_select(0, src), new_tok.view(-1, 1)], dim=1)
        cache.reorder(src)
        # Stop an input once it has K finished hypotheses better than any live beam can become.
        if all(len(f) >= K for f in finished):
            best_live = (scores / (t + 2) ** length_penalty).max(-1).values.tolist()
            if all(max(s for s, _ in f) >= bl for f, bl in zip(finished, best_live)):
                stopped_early = True
                break
        step_in, step_mask = new_tok.view(-1, 1), torch.ones(B * K, 1, dtype=torch.long, device=dev)
    results = []
    for b in range(B):
        pool = list(finished[b])
        if not stopped_early:  # max_new_tokens reached: unfinished beams compete as they are
            length = seqs.shape[1]
            pool += [(scores[b, k].item() / max(length, 1) ** length_penalty, seqs[b * K + k].tolist())
                     for k in range(K) if scores[b, k] > float("-inf")]
        results.append(max(pool, key=lambda p: p[0])[1])
    return [_cut(r, sep, pad) for r in results]


def _cut(row: list[int], sep: int, pad: int) -> list[int]:
    out = []
    for tok in row:
        if tok in (sep, pad):
            break
        out.append(tok)
    return out
