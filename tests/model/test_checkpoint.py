"""Checkpoint loading: one copy of the weights, tied heads shared, stored dtypes cast to fp32."""

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import vlpeft
from vlpeft.data.images import ImagePreprocess
from vlpeft.errors import UserError
from vlpeft.model.blip import Blip
from vlpeft.model.checkpoint import save_checkpoint
from vlpeft.model.config import preset
from vlpeft.model.hf import read_hf_weights
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


def _write_weights(folder, name, state, sharded=False):
    """Write `state` as a transformers checkpoint folder holds it: `name` (model.safetensors or
    pytorch_model.bin) as one file, or as two shards and the index naming each tensor's shard."""
    folder.mkdir()
    def write(tensors, path):
        save_file(tensors, str(path)) if path.suffix == ".safetensors" else torch.save(tensors, path)
    if not sharded:
        return write(state, folder / name)
    stem, ext = name.split(".")
    keys = sorted(state)
    shards = {f"{stem}-0000{i + 1}-of-00002.{ext}": {k: state[k] for k in part}
              for i, part in enumerate([keys[:2], keys[2:]])}
    for file, shard in shards.items():
        write(shard, folder / file)
    index = {"metadata": {}, "weight_map": {k: file for file, shard in shards.items() for k in shard}}
    (folder / f"{name}.index.json").write_text(json.dumps(index))


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin"])
@pytest.mark.parametrize("sharded", [False, True])
def test_transformers_weights_are_read_in_every_layout(tmp_path, name, sharded):
    state = {f"t{i}": torch.randn(3, i + 1) for i in range(4)}
    _write_weights(tmp_path / "ckpt", name, state, sharded)
    got = read_hf_weights(tmp_path / "ckpt")
    assert sorted(got) == sorted(state) and all(torch.equal(got[k], state[k]) for k in state)


def test_missing_or_unreadable_transformers_weights_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty: no model.safetensors or pytorch_model.bin \(nor a sharded"):
        read_hf_weights(tmp_path / "empty")
    _write_weights(tmp_path / "torn", "pytorch_model.bin", {f"t{i}": torch.zeros(1) for i in range(4)}, sharded=True)
    (tmp_path / "torn" / "pytorch_model-00002-of-00002.bin").unlink()  # a shard the index names is missing
    with pytest.raises(UserError, match=r"torn: cannot read checkpoint weights \(FileNotFoundError"):
        read_hf_weights(tmp_path / "torn")


def test_a_hub_repo_with_pytorch_weights_only_is_downloaded_with_them(tmp_path, monkeypatch):
    """`load_model("owner/name")` asks the hub for JSON, text and safetensors files; a repo without
    safetensors (older uploads) is asked again for its pytorch_model*.bin. The hub is a local folder here."""
    import fnmatch

    import huggingface_hub

    from vlpeft.model.checkpoint import _download

    repo = tmp_path / "repo"
    _write_weights(repo, "pytorch_model.bin", {"t0": torch.ones(2)})
    (repo / "config.json").write_text("{}")
    (repo / "tf_model.h5").write_bytes(b"never fetched")
    asked = []

    def snapshot_download(repo_id, allow_patterns):
        asked.append(sorted(allow_patterns))
        local = tmp_path / "cache" / repo_id.replace("/", "--")
        local.mkdir(parents=True, exist_ok=True)
        for f in repo.iterdir():
            if any(fnmatch.fnmatch(f.name, p) for p in allow_patterns):
                (local / f.name).write_bytes(f.read_bytes())
        return str(local)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    folder = _download("someone/old-blip")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "pytorch_model.bin"]
    assert asked == [["*.json", "*.safetensors", "*.txt"], ["*.json", "*.txt", "pytorch_model*.bin"]]
    assert torch.equal(read_hf_weights(folder)["t0"], torch.ones(2))


def test_a_checkpoints_digest_covers_what_changes_its_outputs_and_nothing_else(tmp_path):
    import shutil

    from vlpeft.model.checkpoint import checkpoint_digest, weights_digest

    folder = tmp_path / "a"
    _save(folder, preset("tiny"))
    digest = checkpoint_digest(folder)
    assert len(digest) == 16 and digest != weights_digest(folder)

    def variant(name, edit):
        copy = tmp_path / name
        shutil.copytree(folder, copy)
        edit(copy)
        return copy

    def respaced(copy):  # the same settings, written with another layout and key order
        meta = json.loads((copy / "config.json").read_text())
        (copy / "config.json").write_text(json.dumps(dict(reversed(list(meta.items()))), indent=1))

    def mean(copy):
        meta = json.loads((copy / "config.json").read_text())
        meta["preprocess"]["mean"] = [0.5, 0.5, 0.5]
        (copy / "config.json").write_text(json.dumps(meta))

    def vocab(copy):
        tok = json.loads((copy / "tokenizer.json").read_text())
        tok["model"]["vocab"]["zzzz"] = len(tok["model"]["vocab"])
        (copy / "tokenizer.json").write_text(json.dumps(tok))

    assert checkpoint_digest(variant("same", respaced)) == digest
    for name, edit in (("mean", mean), ("vocab", vocab)):
        changed = variant(name, edit)
        assert weights_digest(changed) == weights_digest(folder)  # what older records compared
        assert checkpoint_digest(changed) != digest, name


def test_the_shipped_tiny_checkpoint_loads_by_name_and_is_verified(tmp_path, monkeypatch):
    """`tiny` is the checkpoint that ships with vlpeft (made by `vlpeft pretrain --preset tiny`, its
    digest recorded): it loads from any folder, a damaged install is refused in one line, and a
    folder of the user's named `tiny` wins over it."""
    import shutil

    from vlpeft.model import checkpoint
    from vlpeft.model.checkpoint import SHIPPED_DIR, checkpoint_digest, load_model, shipped_names

    assert "tiny" in shipped_names()
    record = json.loads((SHIPPED_DIR / "tiny" / "shipped.json").read_text())
    assert record["made_by"] == "vlpeft pretrain --preset tiny" and len(record["commit"]) == 40
    assert checkpoint_digest("tiny") == record["checkpoint_digest"]
    monkeypatch.chdir(tmp_path)
    loaded = load_model("tiny")
    assert loaded.kind == "vlpeft" and loaded.model.cfg.name == "tiny" and loaded.pretrain["seed"] == record["seed"]
    damaged = tmp_path / "install"
    shutil.copytree(SHIPPED_DIR, damaged)
    meta = json.loads((damaged / "tiny" / "config.json").read_text())
    meta["preprocess"]["mean"] = [0.5, 0.5, 0.5]
    (damaged / "tiny" / "config.json").write_text(json.dumps(meta))
    monkeypatch.setattr(checkpoint, "SHIPPED_DIR", damaged)
    with pytest.raises(UserError, match=r"install/tiny: the shipped checkpoint 'tiny' is not the one vlpeft was "
                                        r"released with \(digest [0-9a-f]{16}, recorded [0-9a-f]{16}\); reinstall"):
        load_model("tiny")
    mine = tmp_path / "tiny"
    _save(mine, preset("tiny"))
    assert load_model("tiny").source == "tiny"  # the user's own folder, as written
