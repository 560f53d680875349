"""The one name map between vlpeft and transformers BLIP (`vlpeft.model.hf`), checked both ways against
transformers' own classes built from a small random config: every transformers name maps to vlpeft names
and back to itself, except the ones the map lists as dropped or aliased; every vlpeft name maps to a
transformers name that exists, except the ones it lists as vlpeft-only."""

import json
import re

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from vlpeft.errors import UserError  # noqa: E402
from vlpeft.model.blip import Blip  # noqa: E402
from vlpeft.model.hf import (  # noqa: E402
    HF_ALIASES,
    HF_DROPPED,
    VLPEFT_ONLY,
    config_from_hf,
    convert_state_dict,
    from_hf,
    read_hf_weights,
    to_hf,
)

VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
              patch_size=8)
TEXT = dict(vocab_size=99, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=40, bos_token_id=97, pad_token_id=0, sep_token_id=3, eos_token_id=3)
CLASSES = ["BlipForConditionalGeneration", "BlipForQuestionAnswering", "BlipForImageTextRetrieval"]


@pytest.fixture(scope="module", params=CLASSES)
def pair(request, tmp_path_factory):
    """(transformers model, vlpeft model loaded from its saved checkpoint) for one class."""
    torch.manual_seed(0)
    ref = getattr(transformers, request.param)(
        transformers.BlipConfig(vision_config=VISION, text_config=TEXT, image_text_hidden_size=24)).eval()
    folder = tmp_path_factory.mktemp(request.param)
    ref.save_pretrained(folder)
    cfg = config_from_hf(json.loads((folder / "config.json").read_text()), str(folder))
    ours = Blip(cfg).eval()
    ours.load_state_dict(convert_state_dict(read_hf_weights(folder), cfg), strict=False)
    return ref, ours


def listed_as_dropped(key: str) -> bool:
    return any(re.search(pattern, key) for pattern, _ in HF_DROPPED)


def test_every_transformers_name_maps_to_vlpeft_and_back(pair):
    ref, ours = pair
    hf_keys, our_keys = set(ref.state_dict()), set(ours.state_dict())  # tied tensors under each of their names
    round_trip = {k for k in hf_keys if (names := from_hf(k)) and all(to_hf(n) == k for n in names)}
    # What does not come back is exactly what the map lists as dropped or as an alias.
    assert hf_keys - round_trip == {k for k in hf_keys if listed_as_dropped(k) or k in HF_ALIASES}
    for alias in hf_keys & set(HF_ALIASES):  # an alias names a tensor the map knows under another name
        assert HF_ALIASES[alias] in hf_keys and from_hf(alias) == from_hf(HF_ALIASES[alias])
    # Together the transformers names cover vlpeft's state dict, less what transformers lacks.
    covered = {n for k in hf_keys for n in from_hf(k)}
    assert covered == our_keys - set(VLPEFT_ONLY)


def test_every_vlpeft_name_maps_to_a_transformers_name_that_exists(pair):
    ref, ours = pair
    hf_sd, hf_modules = ref.state_dict(), dict(ref.named_modules())
    for name, tensor in ours.state_dict().items():
        if name in VLPEFT_ONLY:
            with pytest.raises(KeyError):
                to_hf(name)
            continue
        key = to_hf(name)
        assert key in hf_sd, name
        # ...and holds the tensor vlpeft loaded from it: all of it, or its row block of a fused qkv.
        held = from_hf(key)
        assert torch.equal(hf_sd[key].chunk(len(held))[held.index(name)], tensor), name
    # Module paths map too (LoRA export): each Linear to a Linear, a fused qkv as wide as its parts together.
    for name, module in ours.named_modules():
        if isinstance(module, nn.Linear):
            theirs = hf_modules[to_hf(name)]
            assert isinstance(theirs, nn.Linear), name
            assert theirs.out_features == len(from_hf(to_hf(name))) * module.out_features, name
            assert theirs.in_features == module.in_features, name


def test_fused_vision_qkv_lists_q_k_v_in_row_order():
    assert from_hf("vision_model.encoder.layers.11.self_attn.qkv.weight") == (
        "vision.blocks.11.attn.q.weight", "vision.blocks.11.attn.k.weight", "vision.blocks.11.attn.v.weight")
    assert {to_hf(f"vision.blocks.11.attn.{p}") for p in "qkv"} == {"vision_model.encoder.layers.11.self_attn.qkv"}
    assert to_hf("text_decoder.blocks.3.self_attn.k") == "text_decoder.bert.encoder.layer.3.attention.self.key"
    assert to_hf("text_encoder.blocks.3.self_attn.k") == "text_encoder.encoder.layer.3.attention.self.key"


# Names older transformers versions and BlipModel checkpoints store, which the classes above no longer have.
OLDER_CHECKPOINT_NAMES = [
    "text_decoder.bert.embeddings.position_ids", "text_encoder.embeddings.position_ids",
    "text_encoder.pooler.dense.weight", "logit_scale", "text_model.embeddings.word_embeddings.weight",
    "visual_projection.weight", "text_projection.weight",
]


def test_dropped_names_load_as_nothing_and_every_drop_rule_is_used():
    assert all(from_hf(k) == () for k in OLDER_CHECKPOINT_NAMES)
    for pattern, why in HF_DROPPED:
        assert any(re.search(pattern, k) for k in OLDER_CHECKPOINT_NAMES), (pattern, why)


def test_unknown_names_are_refused():
    for key in ["vision_model.encoder.layers.0.self_attn.qkv_extra.weight", "text_decoder.cls.seq_relationship.weight"]:
        with pytest.raises(KeyError):
            from_hf(key)
    with pytest.raises(UserError, match="unexpected checkpoint tensor 'text_decoder.cls.seq_relationship.weight'"):
        convert_state_dict({"text_decoder.cls.seq_relationship.weight": torch.zeros(2, 4)}, None)
    with pytest.raises(KeyError):
        to_hf("vision.blocks.0.attn.qk")
