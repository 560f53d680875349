"""The PEFT instrument, method x placement on a tiny model: what trains, what stays frozen, counts
against closed-form formulas, identity at initialisation, save/load, folding and merging."""

import copy
import dataclasses

import pytest
import torch

from vlpeft.errors import UserError
from vlpeft.model.blip import Blip
from vlpeft.model.config import BlipConfig, TextConfig, VisionConfig
from vlpeft.peft import REGISTRY, apply_peft, count_params, fold, load_peft, make_config, save_peft, shared_copy
from vlpeft.peft.adapter import add_adapters
from vlpeft.peft.lora import merge_lora

D, DV, MLP_T, MLP_V, DEPTH_T, DEPTH_V, V = 32, 32, 48, 64, 2, 2, 50
PLACEMENTS = {"decoder": ("text_decoder",), "vision": ("vision",), "all": ("vision", "text_encoder", "text_decoder")}
SIZED = {"prompt": {"n_tokens": 3}, "prefix": {"length": 3}, "adapter": {"bottleneck": 4}, "lora": {"rank": 2},
         "mam": {"bottleneck": 4, "prefix_length": 3}, "ia3": {}, "bitfit": {}, "full": {}, "frozen": {}}


def cfg() -> BlipConfig:
    return BlipConfig(
        vision=VisionConfig(image_size=16, patch_size=8, width=DV, depth=DEPTH_V, heads=2, mlp_width=MLP_V),
        text=TextConfig(
            vocab_size=V, width=D, depth=DEPTH_T, heads=4, mlp_width=MLP_T, max_positions=32, cross_width=DV
        ),
        embed_dim=16,
    )


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    return Blip(cfg()).eval()


def data(seed=0):
    g = torch.Generator().manual_seed(seed)
    px = torch.randn(4, 3, 16, 16, generator=g)
    q = torch.randint(7, V, (4, 6), generator=g)
    a = torch.randint(7, V, (4, 4), generator=g)
    return px, q, a


def loss_fn(m, px, q, a):
    """Captioning loss plus a VQA loss, so every tower gets gradients."""
    img = m.encode_image(px)
    qs = m.encode_text(q, None, img)
    return m.lm_loss(a, torch.ones_like(a), img) + m.lm_loss(a, torch.ones_like(a), qs)


def outputs(m, px, q, a):
    img = m.encode_image(px)
    return torch.cat(
        [m.decoder_logits(a, None, img).flatten(), m.decoder_logits(a, None, m.encode_text(q, None, img)).flatten()]
    )


def applied(base, method, placement, **extra):
    m = copy.deepcopy(base)
    overrides = dict(SIZED[method], **extra)
    if placement is not None:
        overrides["placement"] = list(placement)
    apply_peft(m, method, overrides)
    return m


CASES = [(m, p) for m in REGISTRY for p in PLACEMENTS if not (m == "frozen" and p != "all")]


@pytest.mark.parametrize("method,placement", CASES)
def test_two_steps_change_exactly_the_method_weights(base, method, placement):
    m = applied(base, method, PLACEMENTS[placement]).train()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert bool(trainable) == (method != "frozen")
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad] or [torch.zeros(1, requires_grad=True)],
                            lr=1e-2, weight_decay=0.0)
    for step in range(2):  # two steps: zero-initialised up/B matrices give their partners a gradient only after one
        opt.zero_grad()
        loss = loss_fn(m, *data(step))
        assert loss.requires_grad == (method != "frozen")
        if loss.requires_grad:
            loss.backward()
        opt.step()
    for n, p in m.named_parameters():
        if n in trainable:
            assert not torch.equal(p, before[n]), f"{n} did not change"
        else:
            assert torch.equal(p, before[n]), f"frozen {n} changed"
            assert p.grad is None, f"frozen {n} has a gradient"
    parts = count_params(m)["trainable_per_part"]
    for part in ("vision", "text_encoder", "text_decoder"):
        placed = part in PLACEMENTS[placement] and method != "frozen"
        assert (parts[part] > 0) == placed, part


def trained(m, steps=2):
    torch.manual_seed(1)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad] or [torch.zeros(1, requires_grad=True)],
                            lr=1e-2, weight_decay=0.0)
    for step in range(steps):
        opt.zero_grad()
        loss = loss_fn(m.train(), *data(step))
        if loss.requires_grad:
            loss.backward()
        opt.step()
    return m.eval()


@pytest.mark.slow
@pytest.mark.parametrize("method,extra", [(m, {}) for m in REGISTRY] + [("lora", {"train_head": True})])
def test_a_shared_copy_trains_like_a_deep_copy_and_leaves_the_original_untouched(method, extra):
    torch.manual_seed(0)
    original = Blip(cfg()).eval()
    snapshot = {n: t.clone() for n, t in original.state_dict().items()}
    shared = shared_copy(original)
    torch.manual_seed(2)  # the method's own initialisation draws the same numbers for both
    apply_peft(shared, method, {**SIZED[method], **extra})
    torch.manual_seed(2)
    deep = applied(original, method, None, **extra)
    trainable = {n for n, p in shared.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in deep.named_parameters() if p.requires_grad}
    base = dict(original.named_parameters())
    for n, p in shared.named_parameters():  # frozen weights are the original's tensors; trained ones are clones
        if n in base:
            assert (p is base[n]) == (n not in trainable), n
    trained(shared), trained(deep)
    with torch.no_grad():
        assert torch.equal(outputs(shared, *data()), outputs(deep, *data()))
    for n, t in original.state_dict().items():
        assert torch.equal(t, snapshot[n]), f"the original's {n} changed"
    again = shared_copy(original)  # the next cell starts from the checkpoint, not from the last cell
    with torch.no_grad():
        assert torch.equal(outputs(again, *data()), outputs(original, *data()))


def test_a_shared_copy_keeps_tied_weights_tied_when_it_trains_them():
    torch.manual_seed(0)
    original = Blip(dataclasses.replace(cfg(), tie_lm_head=True)).eval()
    snapshot = original.text_decoder.embed.tokens.weight.detach().clone()
    shared = shared_copy(original)
    apply_peft(shared, "full")
    assert shared.lm_head.out.weight is shared.text_decoder.embed.tokens.weight  # one clone for the tied pair
    assert shared.lm_head.out.weight is not original.lm_head.out.weight
    trained(shared)
    assert not torch.equal(shared.lm_head.out.weight, snapshot)
    assert torch.equal(original.text_decoder.embed.tokens.weight, snapshot)
    assert original.lm_head.out.weight is original.text_decoder.embed.tokens.weight


@pytest.mark.parametrize("method", ["lora", "adapter", "ia3"])
@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_identity_at_initialisation(base, method, placement):
    m = applied(base, method, PLACEMENTS[placement])
    with torch.no_grad():
        assert torch.equal(outputs(m, *data()), outputs(base, *data()))


def test_parallel_adapter_starts_as_identity(base):
    m = copy.deepcopy(base)
    add_adapters(m, PLACEMENTS["all"], ("mlp",), bottleneck=5, parallel=True, scale=4.0)
    with torch.no_grad():
        assert torch.equal(outputs(m, *data()), outputs(base, *data()))


def blocks(placement):
    """(attentions, blocks, width, depth...) per placed tower, for the formulas."""
    out = []
    for part in placement:
        if part == "vision":
            out.append(dict(width=DV, depth=DEPTH_V, attns=1, mlp=MLP_V, kv_in=[DV]))
        else:
            out.append(dict(width=D, depth=DEPTH_T, attns=2, mlp=MLP_T, kv_in=[D, DV]))  # self, cross
    return out


def expected(method, placement):
    """Closed-form trainable parameter counts (and budgets) for SIZED on cfg()."""
    towers = blocks(placement)
    if method == "lora":  # q and v of every attention: r * (in + out) each
        r = 2
        return sum(t["depth"] * sum(r * (t["width"] + t["width"]) + r * (kv + t["width"]) for kv in t["kv_in"])
                   for t in towers)
    if method == "adapter":  # after attn and mlp: 2 * (2 D r + r + D)
        r = 4
        return sum(t["depth"] * 2 * (2 * t["width"] * r + r + t["width"]) for t in towers)
    if method == "ia3":  # l_k, l_v per attention + l_ff
        return sum(t["depth"] * (t["attns"] * 2 * t["width"] + t["mlp"]) for t in towers)
    if method == "prompt":
        return sum(3 * t["width"] for t in towers)
    if method == "prefix":  # E (P x D) + MLP D->D->(L*2*D), self-attention only
        P = 3
        return sum(
            P * t["width"] + (t["width"] * t["width"] + t["width"]) + (t["width"] + 1) * t["depth"] * 2 * t["width"]
            for t in towers
        )
    if method == "mam":  # prefix with h = round(800 D / 768) + parallel adapter after the MLP
        P, r = 3, 4
        total = 0
        for t in towers:
            h = round(800 * t["width"] / 768)
            total += P * t["width"] + t["width"] * h + h + (h + 1) * t["depth"] * 2 * t["width"]
            total += t["depth"] * (2 * t["width"] * r + r + t["width"])
        return total
    if method == "bitfit":
        total = 0
        for part, t in zip(placement, towers):
            w = t["width"]
            if part == "vision":  # norm1, q,k,v,o, norm2, fc1, fc2 per block; patch embed + final norm
                total += t["depth"] * (7 * w + t["mlp"]) + 2 * w
            else:  # self q,k,v,o + norm, cross q,k,v,o + norm, fc1, fc2, mlp_norm; embedding norm
                total += t["depth"] * (12 * w + t["mlp"]) + w
        return total
    raise KeyError(method)


@pytest.mark.parametrize("method", ["lora", "adapter", "ia3", "prompt", "prefix", "mam", "bitfit"])
@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_counts_match_closed_form(base, method, placement):
    m = applied(base, method, PLACEMENTS[placement])
    counts = count_params(m)
    assert counts["trainable"] == expected(method, PLACEMENTS[placement])
    assert counts["backbone"] == sum(p.numel() for p in base.parameters())
    if method in ("prefix", "mam"):  # the budget is the folded size: L * 2 * P * D per tower (+ MAM's adapters)
        towers = blocks(PLACEMENTS[placement])
        folded = sum(t["depth"] * 2 * 3 * t["width"] for t in towers)
        adapters = 0 if method == "prefix" else sum(t["depth"] * (2 * t["width"] * 4 + 4 + t["width"]) for t in towers)
        assert counts["budget"] == folded + adapters
        fold(m)
        assert count_params(m)["trainable"] == counts["budget"]
    else:
        assert counts["budget"] == counts["trainable"]


def test_full_trains_everything_used_and_head_is_counted_apart(base):
    m = applied(base, "full", None)
    c = count_params(m)
    head = sum(p.numel() for p in base.lm_head.parameters())
    towers = sum(p.numel() for t in (base.vision, base.text_encoder, base.text_decoder) for p in t.parameters())
    assert c["trainable_per_part"]["head"] == head and c["trainable"] == head + towers
    lora_head = applied(base, "lora", ("text_decoder",), train_head=True)
    assert count_params(lora_head)["trainable_per_part"]["head"] == head


@pytest.mark.parametrize("method", [m for m in REGISTRY if m != "frozen"])
def test_save_load_round_trip_is_bit_identical(base, method, tmp_path):
    m = applied(base, method, PLACEMENTS["all"]).train()
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    for step in range(2):
        opt.zero_grad()
        loss_fn(m, *data(step)).backward()
        opt.step()
    save_peft(m, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["peft_config.json", "peft_model.safetensors"]
    fresh = copy.deepcopy(base)
    load_peft(fresh, tmp_path)
    for (n1, p1), (n2, p2) in zip(m.named_parameters(), fresh.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
    m.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(outputs(m, *data()), outputs(fresh, *data()))


@pytest.mark.parametrize("method", ["prefix", "mam"])
def test_prefix_folding_keeps_outputs(base, method, tmp_path):
    m = applied(base, method, PLACEMENTS["all"], **({"cross": True} if method == "prefix" else {}))
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
        before = outputs(m, *data())
        fold(m)
        after = outputs(m, *data())
    assert (before - after).abs().max() <= 1e-5
    assert count_params(m)["trainable"] == count_params(m)["budget"]
    save_peft(m, tmp_path)  # a folded model saves and reloads folded
    fresh = copy.deepcopy(base)
    load_peft(fresh, tmp_path)
    with torch.no_grad():
        assert torch.equal(outputs(fresh, *data()), after)


def test_lora_merge_keeps_outputs(base):
    m = applied(base, "lora", PLACEMENTS["all"], targets=["q", "k", "v", "o", "mlp.fc1", "mlp.fc2"])
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n.split(".")[-1]:
                p.normal_(0, 0.05)
        before = outputs(m, *data())
        assert merge_lora(m) == (DEPTH_V * 1 + 2 * DEPTH_T * 2) * 4 + (DEPTH_V + 2 * DEPTH_T) * 2
        after = outputs(m, *data())
    assert (before - after).abs().max() <= 1e-5


@pytest.mark.parametrize("deep", [False, True])
def test_vocab_initialised_prompts_are_the_towers_own_token_states(base, deep):
    """init vocab: every prompt vector is LN(E[t]) of some vocabulary token t of its tower (the input state of
    a real token, no position), at that state's scale; init normal starts them near zero."""
    torch.manual_seed(0)
    m = copy.deepcopy(base)
    apply_peft(m, "prompt", make_config("prompt", {"n_tokens": 5, "deep": deep, "init": "vocab"}))
    for tower in (m.text_encoder, m.text_decoder):
        with torch.no_grad():
            states = tower.embed.norm(tower.embed.tokens.weight)  # (V, D): every token's input state
        prompts = tower.prompt.tokens.detach()  # (layers|1, P, D)
        assert prompts.shape == (DEPTH_T if deep else 1, 5, D)
        nearest = (prompts.reshape(-1, 1, D) - states[None]).norm(dim=-1).min(dim=1).values  # (layers|1 * P,)
        assert nearest.max() < 1e-5
        assert 0.5 < prompts.std() < 2
    torch.manual_seed(0)
    n = copy.deepcopy(base)
    apply_peft(n, "prompt", make_config("prompt", {"n_tokens": 5}))
    assert n.text_encoder.prompt.tokens.std() < 0.05


@pytest.mark.parametrize("method,overrides,needle", [
    ("lorra", {}, 'did you mean "lora"'),
    ("lora", {"rank": 0}, "rank must be positive"),
    ("lora", {"rnk": 4}, 'did you mean "rank"'),
    ("lora", {"rank": "big"}, "must be an integer"),
    ("lora", {"targets": ["query"]}, "matches no layer"),
    ("adapter", {"placement": ["decoder"]}, 'did you mean "text_decoder"'),
    ("adapter", {"placement": []}, "names no part"),
    ("prompt", {"n_tokens": -1}, "must be positive"),
    ("prompt", {"init": "xavier"}, "init must be one of normal, vocab"),
    ("prompt", {"init": "vocab", "placement": ["vision", "text_decoder"]}, "the vision tower has none"),
    ("adapter", {"slots": ["ffn"]}, "unknown slot"),
])
def test_bad_method_configs_are_one_line_user_errors(base, method, overrides, needle):
    with pytest.raises(UserError, match=needle) as e:
        m = copy.deepcopy(base)
        apply_peft(m, method, make_config(method, overrides) if method in REGISTRY else overrides)
    assert "\n" not in str(e.value)


def test_every_registered_method_has_a_test_row_and_a_default_learning_rate():
    """Adding a method is one file, one registry line and one row of SIZED: a method missing its row or
    its learning rate fails here (a fine-tuning run without `lr` takes `default_lr`)."""
    assert set(SIZED) == set(REGISTRY)
    for spec in REGISTRY.values():
        assert isinstance(spec.default_lr, float) and 0 <= spec.default_lr < 1, spec.name
        assert (spec.default_lr == 0) == (spec.name == "frozen"), spec.name  # only a method that trains nothing has 0


@pytest.mark.parametrize("lr", [None, -1e-3, 1.0, float("nan"), True])
def test_the_catalogue_refuses_a_method_without_a_usable_learning_rate(lr):
    from vlpeft import catalogue

    with pytest.raises(ValueError, match="default_lr must be a learning rate"):
        catalogue.add(catalogue.Method("lora-no-lr", "vlpeft.peft.lora", "layer", "#000000", "rank", (1,), (1,), lr,
                                       "-"))
    assert "lora-no-lr" not in catalogue.CATALOGUE and "lora-no-lr" not in REGISTRY


def test_register_refuses_a_method_outside_the_catalogue_or_with_a_knob_its_config_lacks(monkeypatch):
    from vlpeft import catalogue
    from vlpeft.peft.base import MethodSpec, register
    from vlpeft.peft.lora import LoraConfig

    with pytest.raises(ValueError, match="not in the catalogue"):
        register(MethodSpec("lora-unlisted", LoraConfig, lambda m, c: None))
    monkeypatch.setitem(catalogue.CATALOGUE, "lora-width", dataclasses.replace(catalogue.CATALOGUE["lora"],
                                                                              name="lora-width", knob="width"))
    with pytest.raises(ValueError, match="knob 'width' is not a field of LoraConfig"):
        register(MethodSpec("lora-width", LoraConfig, lambda m, c: None))
    assert "lora-unlisted" not in REGISTRY and "lora-width" not in REGISTRY
