"""Frozen image features: used only when the vision encoder is untouched, and results stay the same."""

import pytest
import torch

import vlpeft
from vlpeft.data.images import preprocess
from vlpeft.peft import apply_peft, make_config
from vlpeft.recipes import features
from vlpeft.recipes.finetune import FinetuneConfig, finetune

FAST = dict(length_policy="steps", steps=6, batch_size=8, val_limit=12, test_limit=16, evals=2)


@pytest.mark.parametrize("method, options, untouched", [
    ("lora", {}, True), ("prefix", {}, True), ("frozen", {}, True), ("adapter", {}, True),
    ("lora", {"placement": ["vision", "text_decoder"]}, False), ("prompt", {"placement": ["vision"]}, False),
    ("full", {}, False), ("bitfit", {"placement": ["vision"]}, False), ("ia3", {"placement": ["vision"]}, False),
])
def test_cache_only_when_the_vision_encoder_is_untouched(tiny_checkpoint, method, options, untouched):
    ckpt, _ = tiny_checkpoint
    model = vlpeft.load_model(str(ckpt)).model
    apply_peft(model, method, make_config(method, options))
    assert features.vision_untouched(model) is untouched


@pytest.mark.parametrize("task", ["scenes-caption", "easyvqa-vqa"])
def test_cached_and_plain_runs_give_the_same_scores(tiny_checkpoint, tmp_path, task):
    ckpt, _ = tiny_checkpoint
    results = []
    for cache in (False, True):
        features.clear()
        cfg = FinetuneConfig(model=str(ckpt), task=task, method="lora", budget="2", data_size=24,
                             feature_cache=cache, **FAST)
        m = finetune(cfg, tmp_path / f"run-{cache}", progress=False)
        results.append((m["test_score"], m["best_val_score"]))
    assert results[0] == pytest.approx(results[1], abs=1e-9)
    assert len(features._STORE) > 0  # the cached run did store states


def test_cached_states_equal_the_encoder_output(tiny_checkpoint):
    from vlpeft.recipes.finetune import cached_task

    ckpt, _ = tiny_checkpoint
    loaded = vlpeft.load_model(str(ckpt))
    model = loaded.model.eval()
    task = cached_task("scenes-caption", 0, "{}")
    with pytest.raises(ValueError, match="cannot be cached"):  # as loaded, every weight is trainable
        features.image_encoder(model, task, loaded.preprocess, "test")
    apply_peft(model, "frozen", make_config("frozen"))
    ids = [ex.image_id for ex in task.val[:5]]
    features.clear()
    encode = features.image_encoder(model, task, loaded.preprocess, "test")
    first, again = encode(ids), encode(ids[::-1])
    plain = model.encode_image(preprocess([task.image(i) for i in ids], loaded.preprocess))
    torch.testing.assert_close(first, plain, rtol=1e-5, atol=1e-6)
    assert torch.equal(again, first.flip(0))
