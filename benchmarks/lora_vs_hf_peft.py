"""Figure 1 of bench.py: lora_step_vs_hf_peft (goal <= 0.35 on tiny, <= 0.2 on base).

vlpeft LoRA step time / transformers `BlipForConditionalGeneration` + Hugging Face `peft` LoRA step
time. Same weights (the HF model is saved with `save_pretrained` and loaded by `vlpeft.load_model`),
same rank, alpha and targets (q and v of the decoder's self- and cross-attention; the
trainable-parameter counts are asserted equal, and so are the first losses), same batch, threads and
optimiser. The headline is the vlpeft step as a study runs it: the frozen ViT's output comes from the
feature cache (recipes/features.py), while HF+peft runs the ViT every step. Detail: the ratio without
the cache (vlpeft runs the ViT too: the implementations compared like for like) and the ms of each
side.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from common import interleaved, med, prepared, sig, task_batch, vlpeft_step

# transformers module names of the layers vlpeft's default LoRA targets ("q", "v") select on captioning:
# query and value of the decoder's self-attention and cross-attention in every block.
HF_LORA_TARGETS = r"text_decoder\.bert\.encoder\.layer\.\d+\.(attention|crossattention)\.self\.(query|value)"


def hf_blip_config(cfg):
    """transformers BlipConfig with the sizes and token ids of a vlpeft BlipConfig (no dropout,
    label smoothing 0.1 as BLIP's captioning loss)."""
    import transformers

    v, t = cfg.vision, cfg.text
    vision = {"hidden_size": v.width, "intermediate_size": v.mlp_width, "num_hidden_layers": v.depth,
              "num_attention_heads": v.heads, "image_size": v.image_size, "patch_size": v.patch_size,
              "layer_norm_eps": v.ln_eps, "attention_dropout": 0.0}
    text = {"vocab_size": t.vocab_size, "hidden_size": t.width, "intermediate_size": t.mlp_width,
            "num_hidden_layers": t.depth, "num_attention_heads": t.heads, "max_position_embeddings": t.max_positions,
            "layer_norm_eps": t.ln_eps, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
            "bos_token_id": t.bos_id, "pad_token_id": t.pad_id, "sep_token_id": t.sep_id, "eos_token_id": t.sep_id,
            "label_smoothing": 0.1, "tie_word_embeddings": cfg.tie_lm_head}
    return transformers.BlipConfig(vision_config=vision, text_config=text, image_text_hidden_size=cfg.embed_dim,
                                   label_smoothing=0.1, tie_word_embeddings=cfg.tie_lm_head)



def lora_vs_hf_peft(ref, name, s, scene_seed, threads, dev, tmp: Path) -> tuple[float, dict]:
    import transformers

    import peft
    import vlpeft
    from vlpeft.model.tokenizer import save_tokenizer
    from vlpeft.peft import count_params, get_method

    # transformers' BLIP has only the patch stem, so both sides use it (the tiny preset's conv stem is
    # part of the ViT, which the cached headline figure does not run anyway).
    want = dataclasses.replace(ref.model.cfg, vision=dataclasses.replace(ref.model.cfg.vision, stem="patch"))
    folder = tmp / f"hf-{name}"
    torch.manual_seed(0)
    hf = transformers.BlipForConditionalGeneration(hf_blip_config(want))
    hf.save_pretrained(folder)
    save_tokenizer(ref.tokenizer, folder / "tokenizer.json")
    loaded = vlpeft.load_model(folder)
    got = loaded.model.cfg
    assert (got.vision, got.text) == (want.vision, want.text), f"HF config round trip: {got} != {want}"

    prep, cfg, model, encode = prepared(loaded, str(folder), "lora", s, scene_seed, threads, dev)
    lora = prep.method_cfg
    assert tuple(lora.targets) == ("q", "v") and tuple(lora.placement) == ("text_decoder",), lora
    hf = peft.get_peft_model(hf, peft.LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=0.0,
                                                 target_modules=HF_LORA_TARGETS, bias="none")).to(dev)
    n_vl = count_params(model)["trainable"]
    n_hf = sum(p.numel() for p in hf.parameters() if p.requires_grad)
    assert n_vl == n_hf, f"trainable parameters differ: vlpeft {n_vl}, HF peft {n_hf}"

    batch, image_ids = task_batch(prep, cfg, s["batch"], dev)
    labels = batch.ids.masked_fill(batch.target_mask == 0, -100)
    hf_params = [p for p in hf.parameters() if p.requires_grad]
    hf_opt = torch.optim.AdamW(hf_params, lr=get_method("lora").default_lr, weight_decay=cfg.weight_decay, fused=True)

    def hf_step() -> float:
        hf.train()
        loss = hf(pixel_values=batch.pixels, input_ids=batch.ids, attention_mask=batch.mask, labels=labels).loss
        hf_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf_params, cfg.grad_clip)
        hf_opt.step()
        return loss.item()

    step = vlpeft_step(prep, cfg, model, batch, image_ids, encode)
    assert encode is not None, "LoRA on the decoder should use the feature cache"
    times, first = interleaved({"hf_peft": hf_step, "vlpeft_cached": lambda: step(True),
                                "vlpeft_uncached": lambda: step(False)}, s["warmup"], s["reps"])
    loss_diff = abs(first["hf_peft"] - first["vlpeft_cached"])  # both before their first update
    assert loss_diff <= 1e-3 * max(1.0, abs(first["hf_peft"])), f"first losses differ: {first}"
    ms = {k: med(v) * 1e3 for k, v in times.items()}
    detail = {
        "hf_peft_ms": sig(ms["hf_peft"]),
        "vlpeft_cached_ms": sig(ms["vlpeft_cached"]),
        "vlpeft_uncached_ms": sig(ms["vlpeft_uncached"]),
        "ratio_uncached": sig(ms["vlpeft_uncached"] / ms["hf_peft"]),
        "trainable_params": n_vl,
        "first_loss": sig(first["hf_peft"], 6),
        "first_loss_abs_diff": sig(loss_diff, 3),
        "batch": s["batch"],
        "text_len": int(batch.ids.shape[1]),
        "timed_steps": s["reps"],
    }
    return sig(ms["vlpeft_cached"] / ms["hf_peft"]), detail
