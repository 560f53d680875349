"""VQA's candidate ranking (`tasks.vqa.candidate_logprobs`) against decoding every "[DEC] a [SEP]"
whole, under every PEFT method that changes the decoder, with padded questions and answers."""

import pytest
import torch

from vlpeft.model.blip import Blip
from vlpeft.model.config import BlipConfig, TextConfig, VisionConfig
from vlpeft.peft import apply_peft, make_config
from vlpeft.tasks.vqa import candidate_logprobs, rank_answers

D, V, DEC, SEP, PAD = 32, 60, 2, 3, 0
SIZED = {"frozen": {}, "prompt": {"n_tokens": 3}, "prefix": {"length": 3}, "adapter": {"bottleneck": 4},
         "lora": {"rank": 2}, "mam": {"bottleneck": 4, "prefix_length": 3}}


def model(method: str) -> Blip:
    torch.manual_seed(0)
    m = Blip(BlipConfig(
        vision=VisionConfig(image_size=16, patch_size=8, width=D, depth=1, heads=2, mlp_width=48),
        text=TextConfig(vocab_size=V, width=D, depth=2, heads=4, mlp_width=48, max_positions=32, cross_width=D),
        embed_dim=16)).eval()
    apply_peft(m, method, make_config(method, {**SIZED[method], "placement": ("text_decoder",)}))
    with torch.no_grad():  # away from initialisation (identity for most methods; answers alike), so the
        for p in m.parameters():  # method and the question matter
            p.add_(0.3 * torch.randn_like(p))
    return m


def candidates() -> tuple[torch.Tensor, torch.Tensor]:
    """Seven answers of 1 to 3 tokens, two sharing a first token: (C, La) ids and mask, padded."""
    answers = [[10], [11, 12], [13], [11, 14, 15], [16], [17, 18], [19]]
    La = 2 + max(map(len, answers))
    ids = torch.full((len(answers), La), PAD)
    mask = torch.zeros(len(answers), La, dtype=torch.long)
    for i, a in enumerate(answers):
        row = [DEC, *a, SEP]
        ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row), 1
    return ids, mask


@torch.inference_mode()
def whole(m, q, q_mask, ids, mask) -> torch.Tensor:
    """(B, C): every candidate decoded whole for every question (no cache, nothing shared)."""
    B, C = q.shape[0], ids.shape[0]
    return m.sequence_logprob(ids.repeat(B, 1), mask.repeat(B, 1), q.repeat_interleave(C, 0),
                              q_mask.repeat_interleave(C, 0)).view(B, C)


@pytest.mark.parametrize("method", list(SIZED))
def test_ranking_shares_the_first_step_and_gives_the_whole_decodings_scores(method):
    m = model(method)
    g = torch.Generator().manual_seed(1)
    q = 3 * torch.randn(12, 5, D, generator=g)  # question states (B, Lq, D)
    q_mask = torch.ones(12, 5, dtype=torch.long)
    q_mask[::3, 3:] = 0  # some questions padded
    ids, mask = candidates()
    want = whole(m, q, q_mask, ids, mask)
    keep, got = candidate_logprobs(m, q, q_mask, ids, mask, k=128)
    assert torch.equal(keep, torch.arange(7).expand(12, 7))
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert torch.equal(rank_answers(m, q, q_mask, ids, mask), want.argmax(1))
    assert len(set(want.argmax(1).tolist())) > 1  # the questions disagree: the comparison can fail

    keep, got = candidate_logprobs(m, q, q_mask, ids, mask, k=3)  # BLIP's first-token filter
    with torch.inference_mode():
        first = m.decoder_logits(torch.full((12, 1), DEC), None, q, q_mask)[:, 0].log_softmax(-1)[:, ids[:, 1]]
    assert torch.equal(keep.sort(1).values, first.topk(3, dim=1).indices.sort(1).values)
    torch.testing.assert_close(got, want.gather(1, keep), atol=1e-4, rtol=1e-4)
