"""Checkpoint loading: one copy of the weights, tied heads shared, stored dtypes cast to fp32."""

import dataclasses

import torch
from safetensors.torch import load_file, save_file

import vlpeft
from vlpeft.data.images import ImagePreprocess
from vlpeft.model.blip import Blip
from vlpeft.model.checkpoint import save_checkpoint
from vlpeft.model.config import preset
from vlpeft.model.tokenizer import train_wordpiece


def _save(tmp_path, cfg):
    torch.manual_seed(0)
    model = Blip(cfg).eval()
    tok = train_wordpiece(["a red circle", "a blue square"], vocab_size=cfg.text.vocab_size)
    save_checkpoint(tmp_path, model, tok, ImagePreprocess(image_size=cfg.vision.image_size))
    return model


def test_a_tied_head_is_shared_after_loading_and_outputs_match(tmp_path):
    cfg = dataclasses.replace(preset("tiny"), tie_lm_head=True)
    ref = _save(tmp_path, cfg)
    got = vlpeft.load_model(tmp_path).model.eval()
    assert got.lm_head.out.weight is got.text_decoder.embed.tokens.weight
    assert not any(p.is_meta for p in got.parameters()) and all(p.requires_grad for p in got.parameters())
    img, ids = torch.randn(2, 3, 64, 64), torch.randint(5, 200, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(got.decoder_logits(ids, None, got.encode_image(img)),
                                   ref.decoder_logits(ids, None, ref.encode_image(img)), rtol=0, atol=0)


def test_half_precision_weights_load_as_fp32(tmp_path):
    ref = _save(tmp_path, preset("tiny"))
    state = load_file(tmp_path / "model.safetensors")
    save_file({k: v.half() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    got = vlpeft.load_model(tmp_path).model
    assert {p.dtype for p in got.parameters()} == {torch.float32}
    torch.testing.assert_close(got.vision.patch_embed[0].weight, ref.vision.patch_embed[0].weight.half().float())
