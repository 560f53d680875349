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
    from vlpeft.tasks import cached_task

    ckpt, _ = tiny_checkpoint
    loaded = vlpeft.load_model(str(ckpt))
    model = loaded.model.eval()
    task = cached_task("scenes-caption")
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


def test_an_images_states_do_not_depend_on_what_was_missing_with_it(tiny_checkpoint):
    """A lone image takes another kernel path on a CPU (its states differ in the 6th digit), so the
    states of a study worker, whose batches find some images already cached, would differ from a run
    alone: every image is encoded in a padded chunk of features.CHUNK."""
    ckpt, _ = tiny_checkpoint
    _, task, _, encode = _frozen_encoder(ckpt, None)
    ids = [ex.image_id for ex in task.val[:5]]
    features.clear()
    together = encode(ids)
    features.clear()
    alone = torch.cat([encode([i]) for i in ids])  # each the only one missing
    assert torch.equal(alone, together)


def _frozen_encoder(ckpt, cache_dir, cap_mb=8192):
    from vlpeft.tasks import cached_task

    loaded = vlpeft.load_model(str(ckpt))
    model = loaded.model.eval()
    apply_peft(model, "frozen", make_config("frozen"))
    task = cached_task("scenes-caption")
    encode = features.image_encoder(model, task, loaded.preprocess, "test", cache_dir=cache_dir, disk_cap_mb=cap_mb)
    return model, task, loaded.preprocess, encode


def test_disk_tier_is_read_back_bit_for_bit_without_encoding(tiny_checkpoint, tmp_path, monkeypatch):
    ckpt, _ = tiny_checkpoint
    features.clear()
    model, task, pp, encode = _frozen_encoder(ckpt, tmp_path / "cache")
    ids = [ex.image_id for ex in task.val[:6]]
    first = encode(ids)
    files = sorted((tmp_path / "cache").rglob("*.npy"))
    assert len(files) == 6
    features.clear()  # a new process: memory empty, disk kept
    model, task, pp, encode = _frozen_encoder(ckpt, tmp_path / "cache")
    monkeypatch.setattr(model, "encode_image", lambda *a: pytest.fail("the ViT ran although the disk held the states"))
    assert torch.equal(encode(ids[::-1]), first.flip(0))


def test_a_corrupt_file_is_recomputed_and_the_cap_bounds_the_folder(tiny_checkpoint, tmp_path):
    ckpt, _ = tiny_checkpoint
    features.clear()
    _, task, _, encode = _frozen_encoder(ckpt, tmp_path / "cache")
    ids = [ex.image_id for ex in task.val[:3]]
    first = encode(ids)
    victim = sorted((tmp_path / "cache").rglob("*.npy"))[0]
    victim.write_bytes(victim.read_bytes()[:50])  # truncated
    features.clear()
    _, _, _, encode = _frozen_encoder(ckpt, tmp_path / "cache")
    again = encode(ids)
    # The victim is re-encoded alone, the others come from disk: CPU convolutions (the conv stem) are
    # not bit-identical across batch sizes, so one row may differ in the last bits.
    assert sum(torch.equal(a, b) for a, b in zip(again, first)) >= len(ids) - 1
    torch.testing.assert_close(again, first, rtol=0, atol=1e-5)
    assert victim.stat().st_size > 50  # rewritten whole

    features.clear()
    one = first[0].numel() * 4 + 128
    _, _, _, encode = _frozen_encoder(ckpt, tmp_path / "capped", cap_mb=2.5 * one / 2**20)
    encode([ex.image_id for ex in task.val[:8]])
    assert len(list((tmp_path / "capped").rglob("*.npy"))) == 2  # the rest were encoded, not stored
    assert features.folder_bytes(tmp_path / "capped") <= 2.5 * one + 4096  # + meta.json


_WORKER = """
import sys, torch, vlpeft
from vlpeft.peft import apply_peft, make_config
from vlpeft.recipes import features
from vlpeft.tasks import cached_task
loaded = vlpeft.load_model(sys.argv[1]); model = loaded.model.eval()
apply_peft(model, "frozen", make_config("frozen"))
task = cached_task("scenes-caption")
ids = [ex.image_id for ex in task.val[:40]]
encode = features.image_encoder(model, task, loaded.preprocess, "test", cache_dir=sys.argv[2])
for i in range(0, 40, 4):
    encode(ids[i:i + 4])
"""


def test_concurrent_workers_share_one_folder_safely(tiny_checkpoint, tmp_path):
    import subprocess
    import sys

    ckpt, _ = tiny_checkpoint
    cache = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(ckpt), str(cache)]) for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    assert not list(cache.rglob("*.tmp"))
    features.clear()
    model, task, pp, encode = _frozen_encoder(ckpt, cache)
    ids = [ex.image_id for ex in task.val[:40]]
    assert len(list(cache.rglob("*.npy"))) == 40
    disk = features.disk_cache(cache, features.vision_digest(model), "test", 8192)
    stored = torch.stack([disk.get(i, task.image.digest(i)) for i in ids])
    plain = model.encode_image(preprocess([task.image(i) for i in ids], pp))
    torch.testing.assert_close(stored, plain, rtol=1e-5, atol=1e-6)


def test_disk_cached_runs_score_exactly_as_plain_runs_and_off_writes_nothing(tiny_checkpoint, tmp_path):
    ckpt, _ = tiny_checkpoint
    got = {}
    for name, cache, folder in [("plain", False, tmp_path / "unused"), ("cold", True, tmp_path / "c"),
                                ("warm", True, tmp_path / "c")]:
        features.clear()
        cfg = FinetuneConfig(model=str(ckpt), task="easyvqa-vqa", method="adapter", budget="2", data_size=24,
                             feature_cache=cache, feature_cache_dir=str(folder), **FAST)
        m = finetune(cfg, None, progress=False)
        got[name] = (m["test_score"], m["best_val_score"])
    assert got["plain"] == got["cold"] == got["warm"]
    assert not (tmp_path / "unused").exists()
    assert list((tmp_path / "c").rglob("*.npy"))


def test_a_replaced_image_file_is_encoded_again_never_served_old_states(tiny_checkpoint, tmp_path):
    """The disk tier's key holds each image's content (the SHA-1 of its file), not only its id: after
    every file is replaced by a black one under the same name, a new process encodes the new pixels."""
    from PIL import Image

    from fixtures_data import write_user_task
    from vlpeft.tasks import load_task

    ckpt, _ = tiny_checkpoint
    task_file = write_user_task(tmp_path, "jsonl", "caption")

    def encode_all():
        features.clear()  # a new process: memory empty, disk kept
        loaded = vlpeft.load_model(str(ckpt))
        model = loaded.model.eval()
        apply_peft(model, "frozen", make_config("frozen"))
        data = load_task(str(task_file))
        ids = sorted(data.image._sources)
        encode = features.image_encoder(model, data, loaded.preprocess, data.image_source, cache_dir=tmp_path / "c")
        plain = model.encode_image(preprocess([data.image(i) for i in ids], loaded.preprocess))
        return encode(ids), plain

    before, _ = encode_all()
    for png in (task_file.parent / "images").glob("*.png"):
        Image.new("RGB", Image.open(png).size, (0, 0, 0)).save(png)
    after, black = encode_all()
    torch.testing.assert_close(after, black, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(after, before, atol=1e-3)
    assert len(list((tmp_path / "c").rglob("*.npy"))) == 2 * len(before)  # the old states stay, unused
