"""Behaviour of vlpeft's Blip that PEFT and decoding rely on: padding, caching, hooks, beam search."""

import dataclasses

import pytest
import torch
from torch import nn

from vlpeft.model.blip import Blip
from vlpeft.model.config import PRESETS, BlipConfig, TextConfig, VisionConfig
from vlpeft.model.generate import generate
from vlpeft.model.vit import fold_stem_batchnorm, make_stem


def tiny_cfg(**kw) -> BlipConfig:
    return BlipConfig(vision=VisionConfig(image_size=16, patch_size=8, width=32, depth=2, heads=2, mlp_width=64),
                      text=TextConfig(vocab_size=50, width=32, depth=2, heads=4, mlp_width=48, max_positions=32,
                                      cross_width=32), embed_dim=16, **kw)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = Blip(tiny_cfg()).eval()
    with torch.no_grad():  # sharper logits than the 0.02 init, so greedy/beam choices are not ties
        for p in m.parameters():
            p.mul_(8.0) if p.ndim >= 2 else None
    return m


def batch(B=3, L=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 3, 16, 16, generator=g), torch.randint(7, 50, (B, L), generator=g)


def test_right_padding_does_not_change_real_positions(model):
    pixels, ids = batch()
    img = model.encode_image(pixels)
    short = ids[:, :4]
    padded = torch.cat([short, torch.zeros(3, 3, dtype=torch.long)], 1)
    mask = torch.cat([torch.ones(3, 4), torch.zeros(3, 3)], 1).long()
    with torch.no_grad():
        for causal in (False, True):
            tower = model.text_decoder if causal else model.text_encoder
            a = tower(short, None, context=img, causal=causal)
            b = tower(padded, mask, context=img, causal=causal)[:, :4]
            assert torch.allclose(a, b, atol=1e-5)


def test_causal_decoder_ignores_future_tokens(model):
    pixels, ids = batch()
    img = model.encode_image(pixels)
    other = ids.clone()
    other[:, 4:] = 9
    with torch.no_grad():
        a = model.decoder_logits(ids, None, img)[:, :4]
        b = model.decoder_logits(other, None, img)[:, :4]
    assert torch.allclose(a, b, atol=1e-5)
    with torch.no_grad():  # ... while the bidirectional encoder does see them
        e1, e2 = model.encode_text(ids, None), model.encode_text(other, None)
    assert not torch.allclose(e1[:, :4], e2[:, :4], atol=1e-3)


def greedy_without_cache(model, img, steps):
    ids = torch.full((img.shape[0], 1), model.cfg.text.bos_id)
    for _ in range(steps):
        nxt = model.decoder_logits(ids, None, img)[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], 1)
    return ids[:, 1:].tolist()


def test_cached_greedy_equals_full_recomputation(model):
    pixels, _ = batch()
    with torch.no_grad():
        img = model.encode_image(pixels)
        cached = generate(model, img, max_new_tokens=8)
        full = greedy_without_cache(model, img, 8)
    sep = model.cfg.text.sep_id
    for c, f in zip(cached, full):
        cut = f[: f.index(sep)] if sep in f else f
        assert c == cut


def test_beam_of_one_is_greedy_and_wider_beams_find_likelier_sequences(model):
    pixels, _ = batch(B=4, seed=3)
    sep = model.cfg.text.sep_id
    with torch.no_grad():
        img = model.encode_image(pixels)
        greedy = generate(model, img, max_new_tokens=6)
        beam1 = generate(model, img, max_new_tokens=6, num_beams=1)
        beam4 = generate(model, img, max_new_tokens=6, num_beams=4, length_penalty=0.0)
    assert greedy == beam1

    def logprob(seq, i):
        full = [model.cfg.text.bos_id] + seq + ([sep] if len(seq) < 6 else [])
        ids = torch.tensor([full])
        return model.sequence_logprob(ids, torch.ones_like(ids), img[i:i + 1]).item()

    with torch.no_grad():
        for i in range(4):
            assert logprob(beam4[i], i) >= logprob(greedy[i], i) - 1e-4


class Prompt(nn.Module):
    def __init__(self, P, D, deep=False, layers=2):
        super().__init__()
        self.length, self.deep = P, deep
        self.tokens = nn.Parameter(torch.randn(layers, P, D))

    def forward(self, layer):
        return self.tokens[layer]


@pytest.mark.parametrize("deep", [False, True])
def test_prompt_tokens_keep_output_shapes_and_cache_consistency(deep):
    torch.manual_seed(1)
    m = Blip(tiny_cfg()).eval()
    pixels, ids = batch()
    with torch.no_grad():
        base_img = m.encode_image(pixels)
        m.vision.prompt = Prompt(3, 32, deep)
        m.text_decoder.prompt = Prompt(2, 32, deep)
        img = m.encode_image(pixels)
        assert img.shape == base_img.shape and not torch.allclose(img, base_img)
        logits = m.decoder_logits(ids, None, img)
        assert logits.shape == (3, 6, 50)
        # the KV-cached decoder with prompts gives the same logits step by step
        from vlpeft.model.text import KVCache

        cache = KVCache()
        steps = [m.decoder_logits(ids[:, :1], None, img, cache=cache)[:, -1]]
        for t in range(1, 6):
            steps.append(m.decoder_logits(ids[:, t:t + 1], None, img, cache=cache)[:, -1])
    assert torch.allclose(torch.stack(steps, 1), logits, atol=1e-5)


def test_decoder_prompts_reach_the_first_prediction():
    """The first word (a VQA answer, a caption's first word) is predicted from [DEC]: in the causal
    decoder the prompts come before it, so that prediction depends on them."""
    torch.manual_seed(2)
    m = Blip(tiny_cfg()).eval()
    pixels, ids = batch()
    with torch.no_grad():
        img = m.encode_image(pixels)
        before = m.decoder_logits(ids, None, img)
        m.text_decoder.prompt = Prompt(2, 32, False)
        after = m.decoder_logits(ids, None, img)
    assert after.shape == before.shape
    assert not torch.allclose(after[:, 0], before[:, 0], atol=1e-4)


class Prefix(nn.Module):
    def __init__(self, P, H, d):
        super().__init__()
        self.length = P
        self.k, self.v = nn.Parameter(torch.randn(1, H, P, d)), nn.Parameter(torch.randn(1, H, P, d))

    def forward(self, B):
        return self.k.expand(B, -1, -1, -1), self.v.expand(B, -1, -1, -1)


def test_prefix_keys_values_are_attended_and_cached_correctly():
    torch.manual_seed(2)
    m = Blip(tiny_cfg()).eval()
    pixels, ids = batch()
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0
    with torch.no_grad():
        img = m.encode_image(pixels)
        before = m.decoder_logits(ids, mask, img)
        for blk in m.text_decoder.blocks:
            blk.self_attn.prefix = Prefix(3, 4, 8)
            blk.cross_attn.prefix = Prefix(2, 4, 8)
        after = m.decoder_logits(ids, mask, img)
        assert not torch.allclose(before, after, atol=1e-3)
        from vlpeft.model.text import KVCache

        cache = KVCache()
        steps = [m.decoder_logits(ids[:, :1], mask[:, :1], img, cache=cache)[:, -1]]
        for t in range(1, 6):
            steps.append(m.decoder_logits(ids[:, t:t + 1], mask[:, t:t + 1], img, cache=cache)[:, -1])
    got = torch.stack(steps, 1)
    assert torch.allclose(got[mask.bool()], after[mask.bool()], atol=1e-5)


class ZeroAdapter(nn.Module):
    def __init__(self, D):
        super().__init__()
        self.up = nn.Linear(D, D)
        nn.init.zeros_(self.up.weight), nn.init.zeros_(self.up.bias)

    def forward(self, sub_in, sub_out):
        return sub_out + self.up(sub_in)


def test_adapter_slots_are_called_in_every_block():
    torch.manual_seed(3)
    m = Blip(tiny_cfg()).eval()
    pixels, ids = batch()
    with torch.no_grad():
        img = m.encode_image(pixels)
        base = m.decoder_logits(ids, None, img)
        slots = [(blk, s) for blk in m.text_decoder.blocks for s in ("attn", "cross", "mlp")]
        slots += [(blk, s) for blk in m.vision.blocks for s in ("attn", "mlp")]
        for blk, s in slots:
            blk.adapters[s] = ZeroAdapter(32)
        assert torch.allclose(m.decoder_logits(ids, None, m.encode_image(pixels)), base, atol=1e-6)
        for blk, s in slots:  # a non-zero adapter in any one slot changes the output
            blk.adapters[s].up.bias.copy_(torch.randn(32))  # not constant: LayerNorm removes a constant
            changed = m.decoder_logits(ids, None, m.encode_image(pixels))
            assert not torch.allclose(changed, base, atol=1e-4), s
            blk.adapters[s].up.bias.zero_()


def test_config_validation_and_round_trip():
    cfg = PRESETS["tiny"]
    assert BlipConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="divisible"):
        dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, heads=3))
    from vlpeft.errors import UserError

    with pytest.raises(UserError, match="did you mean"):
        BlipConfig.from_dict({**cfg.to_dict(), "embed_dimm": 3})
    with pytest.raises(UserError, match="vision: width must be an integer, got .wide."):
        BlipConfig.from_dict({**cfg.to_dict(), "vision": {**cfg.to_dict()["vision"], "width": "wide"}})


@pytest.mark.parametrize("stem", ["conv", "pool"])
@pytest.mark.parametrize("patch", [4, 8, 16])
def test_conv_and_pool_stems_give_one_token_per_patch(patch, stem):
    v = VisionConfig(image_size=32, patch_size=patch, stem=stem, width=32, depth=1, heads=2, mlp_width=64)
    cfg = dataclasses.replace(tiny_cfg(), vision=v)
    model = Blip(cfg)
    out = model.encode_image(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 1 + (32 // patch) ** 2, 32)
    # The first convolution runs at full resolution (the point of the stem: pixel-level edges).
    first = model.vision.patch_embed[0]
    assert first.stride == (1, 1) and first.kernel_size == (3, 3)


def test_stem_validation_and_old_configs_default_to_the_patch_stem():
    cfg = tiny_cfg()
    with pytest.raises(ValueError, match="power of two"):
        dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, image_size=12, patch_size=6, stem="conv"))
    with pytest.raises(ValueError, match="unknown"):
        dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, stem="convv"))
    d = PRESETS["tiny"].to_dict()
    del d["vision"]["stem"], d["vision"]["stem_batchnorm"]  # a checkpoint written before the options existed
    assert BlipConfig.from_dict(d).vision.stem == "patch"
    assert PRESETS["tiny"].vision.stem == "pool" and PRESETS["base"].vision.stem == "patch"


def test_conv_stem_is_he_initialised_and_the_patch_stem_keeps_blip_init():
    torch.manual_seed(0)
    conv = Blip(PRESETS["tiny"]).vision.patch_embed  # the tiny preset's pool stem: the same He initialisation
    for m in conv.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            assert abs(m.weight.std().item() / (2 / fan_in) ** 0.5 - 1) < 0.25, m
    patch = Blip(tiny_cfg()).vision.patch_embed
    assert abs(patch.weight.std().item() - 0.02) < 0.004


def test_pool_stem_batchnorm_folds_into_the_convolutions():
    """Pre-training's BatchNorm is folded away: the saved stem has plain convolutions, the same eval-mode
    output, no buffers a frozen stem could update in train mode, and no dependence on the batch."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(PRESETS["tiny"], name="tiny")
    model = Blip(cfg).train()
    assert cfg.vision.stem == "pool" and cfg.vision.stem_batchnorm
    assert any(isinstance(m, nn.MaxPool2d) for m in model.vision.patch_embed)
    for _ in range(3):  # give the running statistics something other than their initial values
        model.encode_image(torch.randn(4, 3, 64, 64) * 2 + 0.5)
    for m in model.vision.patch_embed:
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    model.eval()
    x = torch.randn(3, 3, 64, 64)
    before = model.encode_image(x)
    folded = fold_stem_batchnorm(model.vision)
    assert not folded.stem_batchnorm and model.vision.cfg == folded
    stem = model.vision.patch_embed
    assert not any(isinstance(m, nn.BatchNorm2d) for m in stem) and not list(stem.buffers())
    torch.testing.assert_close(model.encode_image(x), before, rtol=1e-4, atol=1e-4)
    stem.train()
    torch.testing.assert_close(stem(x)[:1], stem(x[:1]), rtol=1e-5, atol=1e-5)
    # the folded stem is exactly what a config without BatchNorm builds
    assert make_stem(folded).state_dict().keys() == stem.state_dict().keys()
    with pytest.raises(ValueError, match="stem_batchnorm"):
        dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, stem="conv"))
