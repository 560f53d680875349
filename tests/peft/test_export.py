"""Exports for the standard libraries, checked against real peft and transformers (max |difference| of
the logits <= 1e-4):
- LoRA and (IA)^3 in Hugging Face peft's format: transformers' BLIP classes (tiny random configs, saved
  with `save_pretrained` and loaded into vlpeft) wrapped by `peft.PeftModel.from_pretrained` on the
  exported folder give vlpeft's logits, including vision LoRA / (IA)^3 fused into transformers' qkv;
- LoRA, (IA)^3, BitFit, full and frozen merged into a transformers checkpoint that
  `BlipFor*.from_pretrained` loads with nothing missing, and `BlipProcessor` with vlpeft's inputs;
- `vlpeft export RUN` on real fine-tuning runs (6 steps, then their weights moved away from the
  identity start so that a wrong export cannot pass), and every refused combination: exit code 2, one
  line, nothing written."""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from PIL import Image  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from vlpeft.cli import main  # noqa: E402
from vlpeft.data.images import ImagePreprocess, preprocess  # noqa: E402
from vlpeft.errors import UserError  # noqa: E402
from vlpeft.model.blip import Blip  # noqa: E402
from vlpeft.model.checkpoint import SHIPPED_DIR, load_model, save_checkpoint  # noqa: E402
from vlpeft.model.config import BlipConfig, TextConfig, VisionConfig  # noqa: E402
from vlpeft.model.hf import (  # noqa: E402
    config_from_hf,
    config_to_hf,
    convert_state_dict,
    read_hf_weights,
    state_dict_to_hf,
)
from vlpeft.model.tokenizer import load_tokenizer  # noqa: E402
from vlpeft.peft import apply_peft, load_peft  # noqa: E402
from vlpeft.peft.export import (  # noqa: E402
    EXPORTS,
    REFUSED,
    export_hf_checkpoint,
    export_hf_peft,
    hf_module_path,
    merged_state_dict,
)
from vlpeft.peft.ia3 import ScaledLinear  # noqa: E402
from vlpeft.peft.lora import LoraLinear, merge_lora  # noqa: E402
from vlpeft.recipes.export import export_run  # noqa: E402
from vlpeft.recipes.finetune import FinetuneConfig, finetune  # noqa: E402

pytestmark = pytest.mark.slow  # transformers and peft models, exports written and loaded back

VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
              patch_size=8)
TEXT = dict(vocab_size=99, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=40, bos_token_id=97, pad_token_id=0, sep_token_id=3, eos_token_id=3)
ALL_PARTS = ["vision", "text_encoder", "text_decoder"]
RANK, ALPHA = 4, 6.0
TARGET_SETS = {
    "qv": ["q", "v"],
    "qkvo_fc1": ["q", "k", "v", "o", "mlp.fc1"],
    "k_crossv_fc2": ["attn.k", "cross_attn.v", "mlp.fc2"],  # vision k alone: rows of q and v stay zero
}
CLASSES = ["BlipForConditionalGeneration", "BlipForQuestionAnswering", "BlipForImageTextRetrieval"]


def build_pair(cls_name, folder):
    """transformers model (random, non-trivial norms/biases) saved to `folder`, and vlpeft's copy of it."""
    torch.manual_seed(0)
    cls = getattr(transformers, cls_name)
    ref = cls(transformers.BlipConfig(vision_config=VISION, text_config=TEXT, image_text_hidden_size=24)).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "norm" in name.lower() or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    ref.save_pretrained(folder)
    cfg = config_from_hf(json.loads((folder / "config.json").read_text()), str(folder))
    ours = Blip(cfg).eval()
    missing, unexpected = ours.load_state_dict(convert_state_dict(read_hf_weights(folder), cfg), strict=False)
    assert not unexpected and set(missing) <= {"temp"}
    return ref, ours


def with_random_lora(model, targets, seed=3):
    """Apply LoRA and give every A and B random values (B starts at zero, which would hide mistakes)."""
    apply_peft(model, "lora", {"rank": RANK, "alpha": ALPHA, "targets": targets, "placement": ALL_PARTS})
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def inputs(B=2, L=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(B, 3, VISION["image_size"], VISION["image_size"], generator=g)
    ids = torch.randint(5, TEXT["vocab_size"] - 3, (B, L), generator=g)
    mask = torch.ones(B, L, dtype=torch.long)
    mask[1, 4:] = 0  # right padding on one row
    return pixels, ids, mask


@torch.no_grad()
def hf_and_vlpeft_outputs(cls_name, hf, ours):
    """(transformers output, vlpeft output, mask of positions to compare) for the class's task."""
    pixels, ids, mask = inputs()
    bos = ours.cfg.text.bos_id
    if cls_name == "BlipForConditionalGeneration":
        ids[:, 0] = bos
        want = hf(pixel_values=pixels, input_ids=ids, attention_mask=mask).logits
        got = ours.decoder_logits(ids, mask, ours.encode_image(pixels))
        return want, got, mask.bool()
    if cls_name == "BlipForQuestionAnswering":
        _, a_ids, a_mask = inputs(L=4, seed=2)
        a_ids[:, 0] = bos
        img = hf.vision_model(pixel_values=pixels).last_hidden_state
        q = hf.text_encoder(input_ids=ids, attention_mask=mask, encoder_hidden_states=img).last_hidden_state
        want = hf.text_decoder(input_ids=a_ids, attention_mask=a_mask, encoder_hidden_states=q,
                               encoder_attention_mask=mask).logits
        # transformers 5.x ignores the question mask in the answer decoder's cross-attention (see
        # tests/model/test_hf_equivalence.py), so vlpeft is asked for the unmasked computation too.
        got = ours.decoder_logits(a_ids, a_mask, ours.encode_text(ids, mask, ours.encode_image(pixels)), None)
        return want, got, a_mask.bool()
    want = hf(input_ids=ids, pixel_values=pixels, attention_mask=mask, use_itm_head=True).itm_score
    got = ours.itm_logits(ids, mask, ours.encode_image(pixels))
    return want, got, torch.ones(want.shape[0], dtype=torch.bool)


@pytest.mark.parametrize("targets", list(TARGET_SETS))
@pytest.mark.parametrize("cls_name", CLASSES)
def test_peft_loads_export_with_same_outputs(cls_name, targets, tmp_path):
    ref, ours = build_pair(cls_name, tmp_path / "hf")
    base_want, _, keep = hf_and_vlpeft_outputs(cls_name, ref, ours)
    with_random_lora(ours, TARGET_SETS[targets])
    export_hf_peft(ours, tmp_path / "adapter", base_model_name_or_path=str(tmp_path / "hf"))

    model = peft.PeftModel.from_pretrained(ref, str(tmp_path / "adapter")).eval()
    want, got, keep = hf_and_vlpeft_outputs(cls_name, model.base_model.model, ours)
    assert (want - base_want)[keep].abs().max() > 1e-2  # the adapter changes the outputs...
    assert (got - want)[keep].abs().max() <= 1e-4  # ...exactly as vlpeft's LoRA does

    # peft holds every exported tensor, under the same name, and no other LoRA weight.
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    loaded = peft.get_peft_model_state_dict(model)
    assert set(loaded) == set(saved)
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    # One peft LoRA per vlpeft LoRA layer, vision q/k/v of a block counted once (fused qkv).
    want_paths = {hf_module_path(n)[0] for n, m in ours.named_modules() if isinstance(m, LoraLinear)}
    got_paths = {n.removeprefix("base_model.model.") for n, m in model.named_modules()
                 if isinstance(m, peft.tuners.lora.LoraLayer)}
    assert got_paths == want_paths


@pytest.mark.parametrize("targets,parts", [("qv", 2), ("qkvo_fc1", 3), ("k_crossv_fc2", 1)])
def test_fused_vision_qkv_keeps_each_part_scale(targets, parts, tmp_path):
    ref, ours = build_pair("BlipForConditionalGeneration", tmp_path / "hf")
    with_random_lora(ours, TARGET_SETS[targets])
    export_hf_peft(ours, tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    qkv = [f"vision_model.encoder.layers.{i}.self_attn.qkv" for i in range(VISION["num_hidden_layers"])]
    if parts == 1:
        assert config["rank_pattern"] == {} and config["alpha_pattern"] == {}
    else:
        assert config["rank_pattern"] == {k: parts * RANK for k in qkv}
        assert config["alpha_pattern"] == {k: parts * ALPHA for k in qkv}
    model = peft.PeftModel.from_pretrained(ref, str(tmp_path / "adapter"))
    layer = model.base_model.model.vision_model.encoder.layers[0].self_attn.qkv
    assert layer.r["default"] == parts * RANK
    assert layer.scaling["default"] == ALPHA / RANK  # the same float vlpeft multiplies by
    # Rows of parts without LoRA are zero in the fused B.
    D, B = VISION["hidden_size"], layer.lora_B["default"].weight
    zero_rows = {"qv": [1], "qkvo_fc1": [], "k_crossv_fc2": [0, 2]}[targets]
    for j in range(3):
        assert (B[j * D:(j + 1) * D].abs().sum() == 0) == (j in zero_rows)


def test_folder_holds_exactly_peft_files_with_peft_names(tmp_path):
    _, ours = build_pair("BlipForQuestionAnswering", tmp_path / "hf")
    with_random_lora(ours, ["q", "v"])
    out = export_hf_peft(ours, tmp_path / "adapter", base_model_name_or_path="Salesforce/blip-vqa-base")
    assert out == tmp_path / "adapter"
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] is None and config["bias"] == "none"
    assert config["fan_in_fan_out"] is False and config["r"] == RANK and config["lora_alpha"] == ALPHA
    assert config["base_model_name_or_path"] == "Salesforce/blip-vqa-base"
    assert config["auto_mapping"]["base_model_class"] == "BlipForQuestionAnswering"
    assert "text_decoder.bert.encoder.layer.0.attention.self.query" in config["target_modules"]
    assert "text_encoder.encoder.layer.1.crossattention.self.value" in config["target_modules"]
    keys = load_file(out / "adapter_model.safetensors")
    assert all(k.startswith("base_model.model.") and k.endswith((".lora_A.weight", ".lora_B.weight")) for k in keys)
    assert not any(".default." in k for k in keys)  # peft stores keys without the adapter name
    assert set(config) <= set(peft.LoraConfig.__dataclass_fields__)  # nothing peft would warn about


def test_auto_peft_model_builds_the_recorded_class(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # AutoPeftModel would otherwise look for a tokenizer online
    ref, ours = build_pair("BlipForQuestionAnswering", tmp_path / "hf")
    with_random_lora(ours, ["q", "k", "v", "o", "mlp.fc1"])
    export_hf_peft(ours, tmp_path / "adapter", base_model_name_or_path=str(tmp_path / "hf"))
    model = peft.AutoPeftModel.from_pretrained(str(tmp_path / "adapter")).eval()
    hf = model.base_model.model
    assert type(hf) is transformers.BlipForQuestionAnswering
    want, got, keep = hf_and_vlpeft_outputs("BlipForQuestionAnswering", hf, ours)
    assert (got - want)[keep].abs().max() <= 1e-4


def test_only_unmerged_lora_without_trained_head_exports(tmp_path):
    _, ours = build_pair("BlipForConditionalGeneration", tmp_path / "hf")
    with pytest.raises(UserError, match="no PEFT method"):
        export_hf_peft(ours, tmp_path / "a")
    apply_peft(ours, "adapter")
    with pytest.raises(UserError, match="adapter does not export to the peft format: peft has no"):
        export_hf_peft(ours, tmp_path / "b")

    _, ours = build_pair("BlipForConditionalGeneration", tmp_path / "hf2")
    apply_peft(ours, "lora", {"train_head": True})
    with pytest.raises(UserError, match="train_head"):
        export_hf_peft(ours, tmp_path / "c")

    _, ours = build_pair("BlipForConditionalGeneration", tmp_path / "hf3")
    apply_peft(ours, "lora")
    merge_lora(ours)
    with pytest.raises(UserError, match="merge_lora"):
        export_hf_peft(ours, tmp_path / "d")
    assert not any((tmp_path / name).exists() for name in "abcd")  # nothing written on refusal


# ---- (IA)^3 in peft's format ---------------------------------------------------------------------------------


# A trained model's outputs must differ from the base's by ten times the tolerance at least, so that an
# export that lost the trained weights cannot pass.
CHANGED = 1e-3
# How far trained tensors are moved from their start (std of the noise): (IA)^3's vectors, which start at
# one, move the outputs of these tiny random models least.
SCALE = {"ia3": 1.0, "lora": 0.3}


def with_random_trained(model, method, options=None, scale=0.3, seed=3):
    """Apply `method` and move every trained tensor away from its start by N(0, scale^2) noise (LoRA's B
    starts at zero and (IA)^3's vectors at one: an export that dropped them would still pass)."""
    apply_peft(model, method, options)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


@pytest.mark.parametrize("cls_name", CLASSES)
def test_peft_loads_ia3_export_with_same_outputs(cls_name, tmp_path):
    ref, ours = build_pair(cls_name, tmp_path / "hf")
    base_want, _, keep = hf_and_vlpeft_outputs(cls_name, ref, ours)
    with_random_trained(ours, "ia3", {"placement": ALL_PARTS}, scale=SCALE["ia3"])
    export_hf_peft(ours, tmp_path / "adapter", base_model_name_or_path=str(tmp_path / "hf"))

    model = peft.PeftModel.from_pretrained(ref, str(tmp_path / "adapter")).eval()
    want, got, keep = hf_and_vlpeft_outputs(cls_name, model.base_model.model, ours)
    assert (want - base_want)[keep].abs().max() > CHANGED  # the vectors change the outputs...
    assert (got - want)[keep].abs().max() <= 1e-4  # ...exactly as vlpeft's (IA)^3 does

    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    loaded = peft.get_peft_model_state_dict(model)
    assert set(loaded) == set(saved) and all(torch.equal(loaded[k], saved[k]) for k in saved)
    # One peft vector per vlpeft vector (vision k and v of a block: one, on the fused qkv); those vlpeft
    # applies to a layer's input are exactly peft's feedforward modules.
    layers = {n: m for n, m in ours.named_modules() if isinstance(m, ScaledLinear)}
    got_layers = {n.removeprefix("base_model.model."): m for n, m in model.named_modules()
                  if isinstance(m, peft.tuners.ia3.IA3Layer)}
    assert set(got_layers) == {hf_module_path(n)[0] for n in layers}
    assert {n for n, m in got_layers.items() if m.is_feedforward} == \
        {hf_module_path(n)[0] for n, m in layers.items() if m.where == "in"} != set()
    qkv = got_layers["vision_model.encoder.layers.0.self_attn.qkv"].ia3_l["default"]  # (3D, 1): [1; l_k; l_v]
    assert torch.equal(qkv[:VISION["hidden_size"]], torch.ones(VISION["hidden_size"], 1))
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "IA3" and config["auto_mapping"]["base_model_class"] == cls_name
    assert set(config) <= set(peft.IA3Config.__dataclass_fields__)  # nothing peft would warn about


# ---- merged into a transformers checkpoint ---------------------------------------------------------------------

MERGE_OPTIONS = {
    "lora": {"rank": RANK, "alpha": ALPHA, "targets": TARGET_SETS["qkvo_fc1"], "placement": ALL_PARTS},
    "ia3": {"placement": ALL_PARTS},
    "bitfit": {"placement": ALL_PARTS},
    "full": {},  # every part and the (tied) LM head
    "frozen": {},
}


@pytest.mark.parametrize("method", list(MERGE_OPTIONS))
@pytest.mark.parametrize("cls_name", CLASSES)
def test_merged_checkpoint_loads_in_transformers_with_same_outputs(cls_name, method, tmp_path):
    ref, ours = build_pair(cls_name, tmp_path / "hf")
    base_want, _, keep = hf_and_vlpeft_outputs(cls_name, ref, ours)
    options = dict(MERGE_OPTIONS[method])
    if method == "full" and cls_name == "BlipForImageTextRetrieval":
        options["train_head"] = False  # no LM head
    with_random_trained(ours, method, options, scale=SCALE.get(method, 0.1))
    out = export_hf_checkpoint(ours, tmp_path / "merged", cls_name)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]  # no tokenizer given

    merged, info = getattr(transformers, cls_name).from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    want, got, keep = hf_and_vlpeft_outputs(cls_name, merged.eval(), ours)
    assert (got - want)[keep].abs().max() <= 1e-4
    changed = (want - base_want)[keep].abs().max()
    assert changed > CHANGED if method != "frozen" else changed <= 1e-6


def test_merged_state_folds_each_method_by_its_formula(tmp_path):
    _, ours = build_pair("BlipForQuestionAnswering", tmp_path / "hf")
    base = {k: v.clone() for k, v in ours.state_dict().items()}
    with_random_trained(ours, "ia3", {"placement": ALL_PARTS})
    merged = merged_state_dict(ours)
    assert set(merged) == set(base)  # the base model's names, the vectors gone
    k, fc2 = ours.text_decoder.blocks[0].self_attn.k, ours.vision.blocks[1].mlp.fc2
    name_k, name_fc2 = "text_decoder.blocks.0.self_attn.k", "vision.blocks.1.mlp.fc2"
    assert torch.allclose(merged[f"{name_k}.weight"], torch.diag(k.ia3_scale) @ base[f"{name_k}.weight"])
    assert torch.allclose(merged[f"{name_k}.bias"], k.ia3_scale * base[f"{name_k}.bias"])
    assert torch.allclose(merged[f"{name_fc2}.weight"], base[f"{name_fc2}.weight"] @ torch.diag(fc2.ia3_scale))
    assert torch.equal(merged[f"{name_fc2}.bias"], base[f"{name_fc2}.bias"])

    _, ours = build_pair("BlipForQuestionAnswering", tmp_path / "hf2")
    apply_peft(ours, "prefix")
    with pytest.raises(UserError, match="prefix cannot be merged into the weights: prefix keys and values"):
        merged_state_dict(ours)


@pytest.mark.parametrize("cls_name", CLASSES)
def test_config_and_weights_convert_back_to_what_transformers_saved(cls_name, tmp_path):
    _, ours = build_pair(cls_name, tmp_path / "hf")
    cfg = ours.cfg
    token_ids = {"cls": cfg.text.cls_id, "enc": cfg.text.enc_id}
    assert config_from_hf(config_to_hf(cfg, cls_name, "x"), "x", token_ids) == cfg
    saved = load_file(tmp_path / "hf" / "model.safetensors")
    written = state_dict_to_hf(ours.state_dict(), cfg, cls_name)
    assert set(written) == set(saved)  # the names save_pretrained writes: tied head once, qkv fused
    assert all(torch.equal(written[k], saved[k]) for k in saved)


def test_what_transformers_blip_cannot_hold_is_refused_in_one_line():
    from vlpeft.model.config import PRESETS

    with pytest.raises(UserError, match="tiny: vision stem 'pool' has no transformers counterpart"):
        config_to_hf(PRESETS["tiny"], "BlipForConditionalGeneration", "tiny")
    captioner = dataclasses.replace(PRESETS["base"], text_encoder=False, itc_itm=False)
    with pytest.raises(UserError, match="BlipForQuestionAnswering needs a text encoder, which this model lacks"):
        config_to_hf(captioner, "BlipForQuestionAnswering", "m")
    # a vlpeft model with every part exports as each class: what the class has comes back
    for cls_name in CLASSES:
        parts = {"BlipForConditionalGeneration": dict(text_encoder=False, itc_itm=False),
                 "BlipForQuestionAnswering": dict(itc_itm=False),
                 "BlipForImageTextRetrieval": dict(text_decoder=False)}[cls_name]
        full = PRESETS["base"]
        back = config_from_hf(config_to_hf(full, cls_name, "m"), "m", {"cls": full.text.cls_id,
                                                                        "enc": full.text.enc_id})
        assert back == dataclasses.replace(full, name=cls_name, **parts)


# ---- `vlpeft export RUN` on fine-tuning runs ---------------------------------------------------------------------

TINY_TOKENIZER = SHIPPED_DIR / "tiny" / "tokenizer.json"  # covers the built-in tasks' words
FAST = dict(length_policy="steps", steps=6, batch_size=8, data_size=16, val_limit=8, test_limit=8, evals=1)
TASKS = {"caption": "scenes-caption", "vqa": "easyvqa-vqa"}
TASK_CLASS = {"caption": "BlipForConditionalGeneration", "vqa": "BlipForQuestionAnswering"}
RUN_OPTIONS = {"lora": {"targets": ["q", "k", "v", "o", "mlp.fc1"], "placement": ALL_PARTS},
               "ia3": {"placement": ALL_PARTS}, "bitfit": {"placement": ALL_PARTS}}


def nontrivial(model):
    """Random norms and biases (zeros and ones would hide a swapped or dropped tensor)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower() or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """Two base checkpoints with a patch-stem ViT (what transformers' BLIP has), random weights and
    the shipped tiny tokenizer: "hf", a BlipForQuestionAnswering saved by transformers itself (tied LM
    head, as real BLIP); "vlpeft", a vlpeft checkpoint with every part and an untied LM head."""
    root = tmp_path_factory.mktemp("bases")
    tok = load_tokenizer(TINY_TOKENIZER, add_blip_tokens=False)
    torch.manual_seed(0)
    text = dict(TEXT, vocab_size=tok.vocab_size, max_position_embeddings=64, bos_token_id=tok.dec_id,
                pad_token_id=tok.pad_id, sep_token_id=tok.sep_id, eos_token_id=tok.sep_id)
    ref = transformers.BlipForQuestionAnswering(
        transformers.BlipConfig(vision_config=VISION, text_config=text, image_text_hidden_size=24))
    nontrivial(ref).save_pretrained(root / "hf")
    shutil.copyfile(TINY_TOKENIZER, root / "hf" / "tokenizer.json")
    cfg = BlipConfig(vision=VisionConfig(image_size=32, patch_size=8, width=32, depth=2, heads=4, mlp_width=64),
                     text=TextConfig(vocab_size=tok.vocab_size, width=32, depth=2, heads=2, mlp_width=48,
                                     max_positions=64, cross_width=32, pad_id=tok.pad_id, cls_id=tok.cls_id,
                                     sep_id=tok.sep_id, bos_id=tok.dec_id, enc_id=tok.enc_id),
                     embed_dim=24, name="patch")
    save_checkpoint(root / "vlpeft", nontrivial(Blip(cfg)), tok, ImagePreprocess(image_size=32, resample="bilinear"))
    return {"hf": root / "hf", "vlpeft": root / "vlpeft"}


def move_weights(run, seed=5):
    """Move a run's saved PEFT weights away from their start. Six steps on a random model select the
    starting weights (step 0 scores best, on validation, as often as not), which exports trivially."""
    path = run / "peft_model.safetensors"
    scale = SCALE.get(json.loads((run / "peft_config.json").read_text())["method"], 0.1)
    g = torch.Generator().manual_seed(seed)
    save_file({k: v + torch.randn(v.shape, generator=g) * scale for k, v in load_file(path).items()}, str(path))


@pytest.fixture(scope="module")
def run_of(bases, tmp_path_factory):
    """(method, kind, base) -> a finished run folder: `vlpeft finetune` for 6 steps on the built-in task of
    that kind, made once per module on first use, its weights then moved (`move_weights`)."""
    made = {}

    def make(method, kind, base="hf"):
        if (method, kind, base) not in made:
            out = tmp_path_factory.mktemp("runs") / f"{method}-{kind}-{base}"
            finetune(FinetuneConfig(model=str(bases[base]), task=TASKS[kind], method=method,
                                    method_options=RUN_OPTIONS.get(method, {}), **FAST), out, progress=False)
            move_weights(out)
            made[method, kind, base] = out
        return made[method, kind, base]

    return make


def run_model(base, run):
    """vlpeft's PEFT model of `run` on `base`, as `vlpeft evaluate` builds it."""
    model = load_model(base).model
    load_peft(model, run)
    return model.eval()


@pytest.mark.parametrize("method,kind", [("lora", "vqa"), ("ia3", "caption")])
def test_export_run_to_peft_gives_the_runs_outputs(method, kind, run_of, bases, tmp_path):
    run, cls_name = run_of(method, kind), TASK_CLASS[kind]
    r = export_run(run, tmp_path / "out", "peft")
    assert r["architecture"] == cls_name and r["files"] == ["adapter_config.json", "adapter_model.safetensors"]
    config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(bases["hf"].resolve())
    assert config["auto_mapping"]["base_model_class"] == cls_name

    ours = run_model(bases["hf"], run)
    ref = getattr(transformers, cls_name).from_pretrained(bases["hf"]).eval()
    base_want, _, keep = hf_and_vlpeft_outputs(cls_name, ref, ours)
    model = peft.PeftModel.from_pretrained(ref, str(tmp_path / "out")).eval()
    want, got, keep = hf_and_vlpeft_outputs(cls_name, model.base_model.model, ours)
    assert (want - base_want)[keep].abs().max() > CHANGED
    assert (got - want)[keep].abs().max() <= 1e-4
    if kind == "caption":  # the text encoder's layers are left out: a captioning class has none
        assert not any(k.startswith("base_model.model.text_encoder.") for k in
                       load_file(tmp_path / "out" / "adapter_model.safetensors"))


@pytest.mark.parametrize("method,kind,base", [("lora", "caption", "vlpeft"), ("ia3", "vqa", "hf"),
                                              ("bitfit", "caption", "hf"), ("full", "vqa", "hf")])
def test_export_run_merged_gives_the_runs_outputs(method, kind, base, run_of, bases, tmp_path):
    run, cls_name, out = run_of(method, kind, base), TASK_CLASS[kind], tmp_path / "out"
    r = export_run(run, out, "merged")
    assert r["architecture"] == cls_name and {"config.json", "model.safetensors", "tokenizer.json"} <= set(r["files"])
    merged, info = getattr(transformers, cls_name).from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]

    ours = run_model(bases[base], run)
    want, got, keep = hf_and_vlpeft_outputs(cls_name, merged.eval(), ours)
    assert (got - want)[keep].abs().max() <= 1e-4
    _, before, _ = hf_and_vlpeft_outputs(cls_name, merged, load_model(bases[base]).model.eval())
    assert (got - before)[keep].abs().max() > CHANGED  # the run's weights are in it
    _, again, _ = hf_and_vlpeft_outputs(cls_name, merged, load_model(out).model.eval())
    assert (again - got)[keep].abs().max() <= 1e-4  # and vlpeft reads it back as a transformers checkpoint
    if base == "hf":  # a transformers base lends its own tokenizer files
        assert (out / "tokenizer.json").read_bytes() == (bases["hf"] / "tokenizer.json").read_bytes()


def test_merged_folder_has_a_processor_giving_vlpeft_inputs(run_of, bases, tmp_path):
    export_run(run_of("lora", "caption", "vlpeft"), tmp_path / "out", "merged")
    processor = transformers.AutoProcessor.from_pretrained(tmp_path / "out")
    assert type(processor).__name__ == "BlipProcessor"
    loaded = load_model(bases["vlpeft"])
    image = Image.fromarray((np.random.default_rng(0).random((50, 40, 3)) * 255).astype(np.uint8))
    text = "A red Circle, left of a square?"
    got = processor(images=image, text=text, return_tensors="pt")
    ids, _ = loaded.tokenizer.encode_batch([text], max_len=40)  # [CLS] text [SEP]
    assert torch.equal(got["input_ids"], ids)
    want = preprocess([image], loaded.preprocess)  # resized 50x40 -> 32x32 with its bilinear filter
    assert (got["pixel_values"] - want).abs().max() <= 1e-6


def test_cli_export_writes_the_folder_and_replaces_only_with_force(run_of, tmp_path, capsys):
    run = run_of("lora", "vqa")
    assert main(["export", str(run), "--format", "peft", "--out", str(tmp_path / "a")]) == 0
    said = capsys.readouterr().out
    assert f"lora run -> peft (BlipForQuestionAnswering): {tmp_path / 'a'}" in said
    assert "peft.PeftModel.from_pretrained(transformers.BlipForQuestionAnswering.from_pretrained(" in said
    assert sorted(os.listdir(tmp_path / "a")) == ["adapter_config.json", "adapter_model.safetensors"]

    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "old.txt").write_text("x")
    assert main(["export", str(run), "--format", "merged", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err == f"vlpeft: error: {tmp_path / 'b'}: not empty (use --force to replace it)\n"
    assert os.listdir(tmp_path / "b") == ["old.txt"]
    assert main(["export", str(run), "--format", "merged", "--out", str(tmp_path / "b"), "--force"]) == 0
    assert "config.json" in os.listdir(tmp_path / "b") and "old.txt" not in os.listdir(tmp_path / "b")
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]  # no staging or replaced folder left beside them


# Each refused (method, format) on a run of that method, one line saying why (`REFUSED`).
REFUSED_RUNS = {"full": "vqa"}  # the kind of the run each method's refusal is checked on (default: caption)


@pytest.mark.parametrize("method,fmt", sorted(REFUSED))
def test_cli_refuses_what_cannot_be_exported_in_one_line(method, fmt, run_of, tmp_path, capsys):
    assert method not in EXPORTS[fmt]
    run, out = run_of(method, REFUSED_RUNS.get(method, "caption")), tmp_path / "out"
    assert main(["export", str(run), "--format", fmt, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"vlpeft: error: {run}: a {method} run does not export to the {fmt} format: {REFUSED[method, fmt]}\n"
    assert os.listdir(tmp_path) == []  # nothing written


def test_cli_refuses_another_base_a_vlpeft_base_for_peft_and_the_run_folder(run_of, bases, tmp_path, capsys):
    run, out = run_of("lora", "vqa"), tmp_path / "out"
    args = ["export", str(run), "--out", str(out)]
    # another base than the run adapted: refused as `vlpeft evaluate` refuses it
    assert main([*args, "--format", "merged", "--model", str(bases["vlpeft"])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{run}: this run adapted {bases['hf']} (checkpoint " in err
    assert err.endswith("--allow-other-base to export this one anyway\n")
    # an adapter needs a base transformers loads
    vlpeft_run = run_of("lora", "caption", "vlpeft")
    assert main(["export", str(vlpeft_run), "--out", str(out), "--format", "peft"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a vlpeft-format checkpoint, which transformers cannot load" in err
    # --out the run folder (or the base's): replacing it would delete it
    assert main(["export", str(run), "--format", "merged", "--out", str(run), "--force"]) == 2
    assert "is the run folder or holds it" in capsys.readouterr().err and (run / "metrics.json").is_file()
    assert main(["export", str(run), "--format", "merged", "--out", str(bases["hf"].parent), "--force"]) == 2
    assert "is the base checkpoint's folder or holds it" in capsys.readouterr().err
    assert (bases["hf"] / "config.json").is_file() and not out.exists()


def test_cli_refuses_the_tiny_checkpoints_pooling_stem(tmp_path, capsys):
    run = tmp_path / "run"
    finetune(FinetuneConfig(model="tiny", task="scenes-caption", method="lora", **FAST), run, progress=False)
    for fmt in ("peft", "merged"):
        assert main(["export", str(run), "--format", fmt, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "tiny: vision stem 'pool' has no transformers counterpart" in err
        assert os.listdir(tmp_path) == ["run"]


def test_a_failure_halfway_leaves_no_folder_and_keeps_the_old_one(run_of, tmp_path, monkeypatch, capsys):
    import errno

    import vlpeft.peft.export as export_module

    def full_disk(path, text):  # the weights are written; the processor files and config.json are not
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(export_module, "write_text", full_disk)
    run, out = run_of("ia3", "vqa"), tmp_path / "deep" / "out"
    assert main(["export", str(run), "--format", "merged", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (f"vlpeft: error: {out}: cannot write ({os.strerror(errno.ENOSPC)}); "
                                       "nothing was written\n")
    assert os.listdir(tmp_path) == []  # neither the folder, its staging copy nor the parent made for it

    out.mkdir(parents=True)
    (out / "old.txt").write_text("x")
    assert main(["export", str(run), "--format", "merged", "--out", str(out), "--force"]) == 2
    assert os.listdir(out.parent) == ["out"] and os.listdir(out) == ["old.txt"]
