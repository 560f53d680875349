import json

import torch

from vlpeft.data.images import preprocess
from vlpeft.model.checkpoint import load_model
from vlpeft.model.generate import generate


def test_checkpoint_folder_has_the_promised_files_and_records(tiny_checkpoint):
    out, record = tiny_checkpoint
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json", "pretrain.json"}
    on_disk = json.loads((out / "pretrain.json").read_text())
    assert on_disk["objectives"] == ["itc", "itm", "lm"]
    assert on_disk["steps"] == 40 and on_disk["seed"] == 0
    assert on_disk["data"]["splits"] == {"train": 256} and on_disk["data"]["seed"] == 0
    assert set(on_disk["data"]["shapes"]) and set(on_disk["data"]["colors"])
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_losses_fall_during_pretraining(tmp_path):
    from vlpeft.recipes.pretrain import PretrainConfig, pretrain

    # few scenes, many passes: every objective must learn them (the 40-step fixture is too short for ITC)
    record = pretrain(PretrainConfig(scenes=32, steps=151, batch_size=8, warmup=10, lr=1e-3), tmp_path / "m",
                      progress=False)
    first, last = record["loss_curve"][0], record["loss_curve"][-1]
    assert last["lm"] < first["lm"] - 1.0  # from ~ln(vocab) towards the caption grammar
    assert last["itc"] < first["itc"] - 0.3


def test_saved_checkpoint_reloads_to_identical_outputs(tiny_checkpoint):
    out, _ = tiny_checkpoint
    a, b = load_model(out), load_model(out)
    from vlpeft.data.scenes import generate_scenes

    scenes = generate_scenes(4, seed=0, split="test")
    px = preprocess([s.image for s in scenes], a.preprocess)
    with torch.no_grad():
        ia, ib = a.model.encode_image(px), b.model.encode_image(px)
        assert torch.equal(ia, ib)
        caps = generate(a.model, ia, max_new_tokens=10)
    assert all(isinstance(c, list) for c in caps) and len(caps) == 4
    assert a.model.cfg.text.vocab_size == a.tokenizer.vocab_size
    assert a.pretrain is not None and a.kind == "vlpeft"
