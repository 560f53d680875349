"""vlpeft's Blip against transformers' own BLIP classes, built from small random configs, saved with
`save_pretrained` and loaded back by vlpeft: same logits (<= 1e-4) and token-identical greedy captions."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from vlpeft.model.blip import Blip  # noqa: E402  (after importorskip)
from vlpeft.model.generate import generate  # noqa: E402  (after importorskip)
from vlpeft.model.hf import config_from_hf, convert_state_dict, read_hf_weights  # noqa: E402  (after importorskip)

CONFIGS = {
    "narrow": dict(vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                               image_size=32, patch_size=8),
                   text=dict(vocab_size=99, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                             num_attention_heads=2, max_position_embeddings=40), itc=24),
    "wide": dict(vision=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=3,
                             image_size=48, patch_size=16),
                 text=dict(vocab_size=120, hidden_size=48, intermediate_size=80, num_hidden_layers=1,
                           num_attention_heads=6, max_position_embeddings=32), itc=16),
}


def hf_config(spec):
    text = dict(spec["text"], bos_token_id=spec["text"]["vocab_size"] - 2, pad_token_id=0, sep_token_id=3,
                eos_token_id=3)
    return transformers.BlipConfig(vision_config=spec["vision"], text_config=text,
                                   image_text_hidden_size=spec["itc"])


def build(cls, spec, tmp_path):
    torch.manual_seed(0)
    ref = cls(hf_config(spec)).eval()
    # Random LayerNorm/bias values too, so a mis-mapped norm or bias cannot hide behind ones/zeros.
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or "layernorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    ref.save_pretrained(tmp_path)
    import json
    hf = json.loads((tmp_path / "config.json").read_text())
    cfg = config_from_hf(hf, str(tmp_path))
    ours = Blip(cfg).eval()
    missing, unexpected = ours.load_state_dict(convert_state_dict(read_hf_weights(tmp_path), cfg), strict=False)
    # transformers' retrieval head has no contrastive temperature: vlpeft keeps its initial value.
    assert not unexpected and set(missing) <= {"temp"}
    return ref, ours


def inputs(spec, B=3, L=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    s = spec["vision"]["image_size"]
    pixels = torch.randn(B, 3, s, s, generator=g)
    ids = torch.randint(5, spec["text"]["vocab_size"] - 3, (B, L), generator=g)
    mask = torch.ones(B, L, dtype=torch.long)
    mask[1, 4:] = 0  # right padding on one row
    return pixels, ids, mask


@pytest.mark.parametrize("name", list(CONFIGS))
def test_captioning_logits_and_greedy(name, tmp_path):
    spec = CONFIGS[name]
    ref, ours = build(transformers.BlipForConditionalGeneration, spec, tmp_path)
    pixels, ids, mask = inputs(spec)
    ids[:, 0] = ref.config.text_config.bos_token_id
    with torch.no_grad():
        want = ref(pixel_values=pixels, input_ids=ids, attention_mask=mask).logits
        got = ours.decoder_logits(ids, mask, ours.encode_image(pixels))
        assert (got - want)[mask.bool()].abs().max() <= 1e-4
        hf_tokens = ref.generate(pixel_values=pixels, max_new_tokens=12, do_sample=False, num_beams=1)
        our_tokens = generate(ours, ours.encode_image(pixels), max_new_tokens=12)
    sep, pad = ref.config.text_config.sep_token_id, 0
    for row, mine in zip(hf_tokens.tolist(), our_tokens):
        row = row[1:]  # drop [DEC]
        cut = [t for t in row[: next((i for i, t in enumerate(row) if t in (sep, pad)), len(row))]]
        assert mine == cut


@pytest.mark.parametrize("name", list(CONFIGS))
def test_vqa_answer_decoder_logits(name, tmp_path):
    spec = CONFIGS[name]
    ref, ours = build(transformers.BlipForQuestionAnswering, spec, tmp_path)
    pixels, q_ids, q_mask = inputs(spec)
    _, a_ids, a_mask = inputs(spec, L=4, seed=2)
    a_ids[:, 0] = ref.config.text_config.bos_token_id
    with torch.no_grad():
        img = ref.vision_model(pixel_values=pixels).last_hidden_state
        q = ref.text_encoder(input_ids=q_ids, attention_mask=q_mask, encoder_hidden_states=img).last_hidden_state
        want = ref.text_decoder(input_ids=a_ids, attention_mask=a_mask, encoder_hidden_states=q,
                                encoder_attention_mask=q_mask).logits
        q_ours = ours.encode_text(q_ids, q_mask, ours.encode_image(pixels))
        # transformers 5.x drops `encoder_attention_mask` inside BlipTextSelfAttention (the mask arrives
        # as `attention_mask` and is replaced by the unset `encoder_attention_mask`), so its answer
        # decoder attends to padded question positions. BLIP's own code masks them, as vlpeft does
        # with a mask; compare with the mask off, which is what transformers computes.
        got = ours.decoder_logits(a_ids, a_mask, q_ours, None)
    assert (q_ours - q)[q_mask.bool()].abs().max() <= 1e-4
    assert (got - want)[a_mask.bool()].abs().max() <= 1e-4


@pytest.mark.parametrize("name", list(CONFIGS))
def test_itm_and_itc(name, tmp_path):
    spec = CONFIGS[name]
    ref, ours = build(transformers.BlipForImageTextRetrieval, spec, tmp_path)
    pixels, ids, mask = inputs(spec)
    with torch.no_grad():
        want_itm = ref(input_ids=ids, pixel_values=pixels, attention_mask=mask, use_itm_head=True).itm_score
        want_itc = ref(input_ids=ids, pixel_values=pixels, attention_mask=mask, use_itm_head=False).itm_score
        img = ours.encode_image(pixels)
        got_itm = ours.itm_logits(ids, mask, img)
        got_itc = ours.image_feature(img) @ ours.text_feature(ids, mask).t()
    assert (got_itm - want_itm).abs().max() <= 1e-4
    assert (got_itc - want_itc).abs().max() <= 1e-4
