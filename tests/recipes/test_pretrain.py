import json

import pytest
import torch

from vlpeft.model.checkpoint import load_model

pytestmark = pytest.mark.slow  # pre-training


def test_checkpoint_folder_has_the_promised_files_and_records(tiny_checkpoint):
    out, record = tiny_checkpoint
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json", "pretrain.json"}
    on_disk = json.loads((out / "pretrain.json").read_text())
    assert on_disk["objectives"] == ["itc", "itm", "lm", "text_lm", "mlm"]
    assert set(on_disk["objective_details"]) == set(on_disk["objectives"])
    assert on_disk["steps"] == 40 and on_disk["seed"] == 0
    assert on_disk["data"]["splits"] == {"train": 256} and on_disk["data"]["seed"] == 0
    assert set(on_disk["data"]["shapes"]) and set(on_disk["data"]["colors"])
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    # the tiny preset's stem trains with BatchNorm; the checkpoint holds it folded into the convolutions
    config = json.loads((out / "config.json").read_text())["model"]
    assert config["vision"]["stem"] == "pool" and config["vision"]["stem_batchnorm"] is False
    stem = load_model(out).model.vision.patch_embed
    assert not list(stem.buffers()) and not any(isinstance(m, torch.nn.BatchNorm2d) for m in stem)


def test_losses_fall_during_pretraining(tmp_path):
    from vlpeft.recipes.pretrain import PretrainConfig, pretrain

    # few scenes, many passes: every objective must learn them (the 40-step fixture is too short for ITC)
    record = pretrain(PretrainConfig(scenes=32, steps=151, batch_size=8, warmup=10, lr=1e-3), tmp_path / "m",
                      progress=False)
    first, last = record["loss_curve"][0], record["loss_curve"][-1]
    assert last["lm"] < first["lm"] - 1.0  # from ~ln(vocab) towards the caption grammar
    assert last["itc"] < first["itc"] - 0.3
    assert last["text_lm"] < first["text_lm"] - 1.0  # general English is learnt too
    assert last["mlm"] < first["mlm"] - 1.0  # ... by the encoder as well


def test_mlm_trains_the_encoder_and_leaves_the_decoder_alone(tiny_checkpoint):
    from vlpeft.recipes.pretrain import mlm_loss

    loaded = load_model(tiny_checkpoint[0])
    model, tok = loaded.model.train(), loaded.tokenizer
    head = torch.nn.Linear(model.cfg.text.width, tok.vocab_size)
    ids, mask = tok.encode_batch(["the red ball is on the big table", "yes , it is a circle"] * 8, max_len=16)
    loss = mlm_loss(model, head, tok, ids, mask, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert model.text_encoder.embed.tokens.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.text_decoder.parameters())
    assert all(p.grad is None for p in model.vision.parameters())


def test_text_lm_teaches_the_decoder_words_captions_never_use(tmp_path):
    """Without it, "yes" and "no" are words the decoder never had to write (untrained output rows, which
    a PEFT method, the output layer frozen, can hardly use for answers)."""
    from vlpeft.recipes.pretrain import PretrainConfig, pretrain

    first = {}
    for weight in (0.0, 0.5):
        pretrain(
            PretrainConfig(scenes=32, steps=60, batch_size=8, warmup=5, text_lm_weight=weight),
            tmp_path / str(weight),
            progress=False,
        )
        loaded = load_model(tmp_path / str(weight))
        tok = loaded.tokenizer
        ids, _ = tok.encode_batch(["yes no"], max_len=8)
        start = torch.tensor([[tok.dec_id]])
        with torch.no_grad():
            logp = loaded.model.decoder_logits(start, None, None)[0, 0].log_softmax(-1)
        first[weight] = float(logp[ids[0, 1:3]].mean())  # log p(yes), log p(no) as a first word
    assert first[0.5] > first[0.0] + 2.0, first


def test_pretraining_is_bit_reproducible_with_two_threads(tmp_path):
    """Same seed, same thread count => the same checkpoint bytes. The ITM hard-negative images used to be
    gathered with img[neg_img], whose backward adds repeated indices in a thread-dependent order on
    CPU: with two threads, 10-step runs of the old code differed every time."""
    from vlpeft.recipes.pretrain import PretrainConfig, pretrain

    threads = torch.get_num_threads()
    try:
        cfg = PretrainConfig(scenes=64, steps=10, batch_size=32, warmup=2, text_sentences=64, threads=2)
        for name in ("a", "b"):
            pretrain(cfg, tmp_path / name, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_text_lm_reads_the_encoder_through_cross_attention(tiny_checkpoint):
    """BART-style: the decoder's text LM reads the encoder states of the half-masked sentence, so its
    cross-attention and the encoder learn from it; switched off, the decoder LM has no context."""
    from vlpeft.recipes.pretrain import PretrainConfig, text_losses

    loaded = load_model(tiny_checkpoint[0])
    model, tok = loaded.model.train(), loaded.tokenizer
    head = torch.nn.Linear(model.cfg.text.width, tok.vocab_size)
    ids, mask = tok.encode_batch(["the red ball is on the big table", "yes , it is a circle"] * 8, max_len=16)
    for reads in (True, False):
        model.zero_grad(set_to_none=True)
        cfg = PretrainConfig(text_lm_reads_encoder=reads)
        losses = text_losses(model, head, tok, ids, mask, cfg, torch.Generator().manual_seed(0))
        assert set(losses) == {"mlm", "text_lm"}
        losses["text_lm"].backward()  # the decoder's loss alone
        cross = model.text_decoder.blocks[0].cross_attn.k.weight.grad
        encoder = model.text_encoder.embed.tokens.weight.grad
        if reads:
            assert cross is not None and cross.abs().sum() > 0 and encoder.abs().sum() > 0
        else:
            assert cross is None and encoder is None


def test_the_curriculum_draws_single_object_scenes_first(tmp_path, monkeypatch):
    """The first single_object_fraction of the steps sees only one-object scenes (a caption that names
    the one shape in view); the rest draws from every scene, and pretrain.json says so."""
    import vlpeft.recipes.pretrain as recipe

    sizes = []
    real = recipe.pretraining_losses

    def spy(model, tok, pixels, captions, object_sets, *args):
        sizes.append([len(s) for s in object_sets])
        return real(model, tok, pixels, captions, object_sets, *args)

    monkeypatch.setattr(recipe, "pretraining_losses", spy)
    cfg = recipe.PretrainConfig(
        scenes=64, steps=8, batch_size=8, warmup=2, text_sentences=64, single_object_fraction=0.5
    )
    record = recipe.pretrain(cfg, tmp_path / "m", progress=False)
    assert len(sizes) == 8
    assert all(n == 1 for step in sizes[:4] for n in step)
    assert any(n > 1 for step in sizes[4:] for n in step)
    assert record["curriculum"].startswith("steps 0-3 draw only the")
    assert json.loads((tmp_path / "m" / "pretrain.json").read_text())["config"]["single_object_fraction"] == 0.5


def test_the_curriculum_fraction_is_validated():
    from vlpeft.errors import UserError
    from vlpeft.recipes.pretrain import PretrainConfig

    for bad in (-0.1, 1.5):
        with pytest.raises(UserError, match="single_object_fraction"):
            PretrainConfig(single_object_fraction=bad)
