"""LoRA exported in Hugging Face peft's format: transformers' BLIP classes (tiny random configs, saved
with `save_pretrained` and loaded into vlpeft) wrapped by `peft.PeftModel.from_pretrained` on the
exported folder give vlpeft's logits (<= 1e-4), including vision LoRA fused into transformers' qkv."""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from safetensors.torch import load_file  # noqa: E402

from vlpeft.errors import UserError  # noqa: E402
from vlpeft.model.blip import Blip  # noqa: E402
from vlpeft.model.hf import config_from_hf, convert_state_dict, read_hf_weights  # noqa: E402
from vlpeft.peft import apply_peft  # noqa: E402
from vlpeft.peft.export import export_hf_peft, hf_module_path  # noqa: E402
from vlpeft.peft.lora import LoraLinear, merge_lora  # noqa: E402

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
    if cls_name == "BlipForConditionalGeneration":
        ids[:, 0] = TEXT["bos_token_id"]
        want = hf(pixel_values=pixels, input_ids=ids, attention_mask=mask).logits
        got = ours.decoder_logits(ids, mask, ours.encode_image(pixels))
        return want, got, mask.bool()
    if cls_name == "BlipForQuestionAnswering":
        _, a_ids, a_mask = inputs(L=4, seed=2)
        a_ids[:, 0] = TEXT["bos_token_id"]
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
    apply_peft(ours, "ia3")
    with pytest.raises(UserError, match="only LoRA"):
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
