"""Pre-train a tiny BLIP on synthetic scenes with BLIP's three objectives (Li et al., ICML 2022):

- ITC: contrastive loss over in-batch image/text pairs, L = (CE(s_i2t / tau, y) + CE(s_t2i / tau, y)) / 2,
  where y spreads the target over every in-batch text describing the same set of objects (identical
  captions are not negatives);
- ITM: binary match / no-match on the image-grounded encoder's [ENC] state, with one hard negative
  text per image and one hard negative image per text sampled in proportion to softmax(ITC similarity);
- LM: next-token cross-entropy of the image-grounded decoder on the caption (label smoothing 0.1).

Two text-only losses on template sentences of basic English (data/english.py) stand in for the BERT
initialisation of BLIP's text towers: `text_lm` trains the decoder to write general words while
reading the encoder's states of the half-masked sentence (BART's denoising; not in BLIP, whose decoder
reads only images in pre-training), `mlm` (BERT's masked LM) keeps the encoder's token states apart.
The VQA answer decoder reads exactly those encoder states.

Curriculum (Bengio et al., ICML 2009): the first `single_object_fraction` of the steps draw only the
scenes with one object, whose caption names the one shape in view, so the vision tower learns what
shapes look like before it must also learn which object each word of a 2-4 object caption names.
Without it the tiny model named about half its objects with a wrong shape (docs/notes/2026-11-29-tiny-pretraining.md,
"The single-object curriculum").

A plain function: config in, checkpoint folder out. `pretrain.json` records the exact data recipe,
objectives, steps and seed, which later analyses read to judge a downstream task's consistency.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vlpeft.data.english import general_sentences
from vlpeft.data.images import ImagePreprocess, preprocess
from vlpeft.data.scenes import SCENE_IMAGE_SIZE, generate_scenes, scene_objects, scenes_recipe
from vlpeft.errors import UserError
from vlpeft.model.blip import Blip
from vlpeft.model.checkpoint import save_checkpoint
from vlpeft.model.config import preset
from vlpeft.model.tokenizer import SPECIAL_TOKENS, TextTokenizer, train_wordpiece
from vlpeft.model.vit import fold_stem_batchnorm
from vlpeft.recipes.config import PretrainConfig
from vlpeft.recipes.progress import Steps
from vlpeft.recipes.record import environment, peak_memory_mb, reset_peak_memory
from vlpeft.recipes.training import adamw, optimizer_step, warmup_cosine

LR_FLOOR = 0.1  # the cosine decays the learning rate to 0.1 x its peak, not to 0


ENGLISH_REPEATS = 50  # weight of each basic English word in the tokenizer corpus (frequent enough to merge whole)


def build_tokenizer(scenes, vocab_size: int) -> TextTokenizer:
    """WordPiece over the text of the pre-training scenes: every caption phrasing and every question and
    answer (the tokenizer stands in for a real model's English vocabulary; the model itself is
    pre-trained on captions only). Words never seen still encode, letter by letter, without [UNK]."""
    from vlpeft.data.english import BASIC_ENGLISH

    texts = [c for s in scenes for c in s.captions] + [
        t for s in scenes for qa in s.qa for t in (qa.question, qa.answer)
    ]
    texts += list(BASIC_ENGLISH) * ENGLISH_REPEATS  # general words become whole tokens (see data/english.py)
    return TextTokenizer.from_tokenizer(train_wordpiece(texts, vocab_size=vocab_size),
                                        source="scene captions and questions + basic English words")


def pretraining_losses(model: Blip, tok: TextTokenizer, pixels: torch.Tensor, captions: list[str],
                       object_sets: list, label_smoothing: float, max_len: int, gen: torch.Generator) -> dict:
    """The three BLIP losses on one batch (B images, B matching captions)."""
    B = pixels.shape[0]
    img = model.encode_image(pixels)  # (B, 1+N, D)
    ids, mask = tok.encode_batch(captions, max_len=max_len)  # (B, L): [CLS] ... [SEP]
    ids, mask = ids.to(pixels.device), mask.to(pixels.device)

    # ITC: same object set => positive pair
    same = torch.tensor([[a == b for b in object_sets] for a in object_sets], device=pixels.device)  # (B, B)
    target = same.float() / same.float().sum(1, keepdim=True)
    sim = model.itc_logits(model.image_feature(img), model.text_feature(ids, mask))  # (B, B)
    loss_itc = 0.5 * (-(sim.log_softmax(1) * target).sum(1).mean() - (sim.t().log_softmax(1) * target).sum(1).mean())

    # ITM with hard negatives drawn from ITC similarities (positives excluded)
    with torch.no_grad():
        w = sim.float().softmax(1).masked_fill(same, 0) + 1e-8 * (~same)
        neg_text = torch.multinomial(w, 1, generator=gen).squeeze(1)  # (B,)
        w = sim.t().float().softmax(1).masked_fill(same, 0) + 1e-8 * (~same)
        neg_img = torch.multinomial(w, 1, generator=gen).squeeze(1)  # (B,)
    enc_ids = ids.clone()
    enc_ids[:, 0] = tok.enc_id
    all_ids = torch.cat([enc_ids, enc_ids[neg_text], enc_ids])  # (3B, L)
    all_mask = torch.cat([mask, mask[neg_text], mask])
    # index_select, not img[neg_img]: the backward of advanced indexing accumulates repeated indices
    # in a thread-dependent order on CPU, which made pre-training differ run to run
    # (docs/notes/2026-11-29-tiny-pretraining.md)
    all_img = torch.cat([img, img, img.index_select(0, neg_img)])  # (3B, 1+N, D)
    labels = torch.cat([torch.ones(B), torch.zeros(2 * B)]).long().to(pixels.device)
    # Rows whose sampled negative shares the object set (only possible when every other row does) are positives.
    labels[B:2 * B] = same[torch.arange(B), neg_text].long()
    labels[2 * B:] = same[neg_img, torch.arange(B)].long()
    loss_itm = F.cross_entropy(model.itm_logits(all_ids, all_mask, all_img), labels)

    # LM: [DEC] caption [SEP]
    dec_ids = ids.clone()
    dec_ids[:, 0] = tok.dec_id
    loss_lm = model.lm_loss(dec_ids, mask, img, label_smoothing=label_smoothing)
    return {"itc": loss_itc, "itm": loss_itm, "lm": loss_lm}


# words hidden from the text decoder's encoder context (docs/notes/2026-11-29-tiny-pretraining.md,
# "Why the masked LM and lr 1e-3")
TEXT_LM_MASK_RATE = 0.5
MLM_RATE = 0.15  # BERT: 15 % of the tokens are chosen; of those 80 % become [MASK], 10 % a random token, 10 % stay


def word_positions(tok: TextTokenizer, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L) bool: the positions holding a word, which masking may hide (not specials, not padding)."""
    return ~torch.isin(ids, torch.tensor(sorted(tok.special_ids))) & (mask != 0)


def mlm_loss(model: Blip, head: torch.nn.Module, tok: TextTokenizer, ids: torch.Tensor, mask: torch.Tensor,
             gen: torch.Generator) -> torch.Tensor:
    """BERT's masked-LM loss (Devlin et al. 2019) on the text encoder alone (no image):
    L = CE(head(h_i), x_i) over the chosen positions i, h the encoder states of the corrupted text.
    Stands in for the BERT initialisation of BLIP's text encoder: without a token-level objective the
    tiny encoder's token states barely tell questions apart (docs/notes/2026-11-29-tiny-pretraining.md), and the VQA
    answer decoder reads exactly those states. ids/mask (B, L) start with [CLS]; `head` is thrown away."""
    chosen = (torch.rand(ids.shape, generator=gen) < MLM_RATE) & word_positions(tok, ids, mask)  # (B, L)
    roll = torch.rand(ids.shape, generator=gen)
    corrupt = ids.clone()
    corrupt[chosen & (roll < 0.8)] = tok.mask_id
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    corrupt[swap] = torch.randint(len(SPECIAL_TOKENS), tok.vocab_size, (int(swap.sum()),), generator=gen)
    states = model.encode_text(corrupt.to(mask.device), mask)  # (B, L, D)
    if not chosen.any():
        return states.sum() * 0.0
    return F.cross_entropy(head(states[chosen.to(states.device)]), ids[chosen].to(states.device))


def text_losses(model: Blip, mlm_head: torch.nn.Module | None, tok: TextTokenizer, ids: torch.Tensor,
                mask: torch.Tensor, cfg: PretrainConfig, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """The text-only losses on B general English sentences, ids/mask (B, L) starting with [CLS]:
    - mlm: BERT's masked LM of the encoder (`mlm_loss`);
    - text_lm: the decoder writes the sentence, [DEC] x_1 .. x_n [SEP]. With `text_lm_reads_encoder` it
      reads, through its cross-attention, the encoder states H (B, L, D) of the sentence with a random
      TEXT_LM_MASK_RATE of its words replaced by [MASK]: L = -sum_t log p(x_t | x_<t, H), BART's
      denoising objective (Lewis et al., ACL 2020) with token masking. BLIP's VQA answer decoder reads the question
      encoder's states the same way; without this the tiny decoder has only ever read image states, and
      PEFT on easy-VQA sat at the majority answer for hundreds of steps (docs/notes/2026-11-29-tiny-pretraining.md,
      "Why the decoder reads the text encoder in pre-training")."""
    out = {}
    if cfg.mlm_weight > 0:  # the encoder: [CLS] sentence [SEP], 15 % corrupted
        out["mlm"] = mlm_loss(model, mlm_head, tok, ids, mask, gen)
    if cfg.text_lm_weight > 0:  # the decoder: [DEC] sentence [SEP]
        dec_ids = torch.cat([torch.full_like(ids[:, :1], tok.dec_id), ids[:, 1:]], 1)
        context = None
        if cfg.text_lm_reads_encoder:
            hide = (torch.rand(ids.shape, generator=gen) < TEXT_LM_MASK_RATE) & word_positions(tok, ids, mask)  # (B, L)
            context = model.encode_text(ids.masked_fill(hide, tok.mask_id), mask)  # (B, L, D)
        out["text_lm"] = model.lm_loss(dec_ids, mask, context, context_mask=None if context is None else mask,
                                       label_smoothing=cfg.label_smoothing)
    return out


def pretrain(cfg: PretrainConfig, out: str | Path, progress: bool = True) -> dict[str, Any]:
    """Train and write the checkpoint folder `out`; returns the pre-training record (pretrain.json).
    `out` is checked writable before any training."""
    from vlpeft.io import check_writable

    check_writable(out, "checkpoint folder")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = torch.device("cpu")  # the tiny BLIP pre-trains on the CPU
    reset_peak_memory(device)
    started = time.time()
    scenes = generate_scenes(cfg.scenes, seed=cfg.seed, split="train")
    tok = build_tokenizer(scenes, cfg.vocab_size)
    model_cfg = preset(cfg.preset)
    model_cfg = dataclasses.replace(model_cfg, text=dataclasses.replace(
        model_cfg.text, vocab_size=tok.vocab_size, pad_id=tok.pad_id, cls_id=tok.cls_id, sep_id=tok.sep_id,
        bos_id=tok.dec_id, enc_id=tok.enc_id), name=cfg.preset)
    if model_cfg.vision.image_size != SCENE_IMAGE_SIZE:
        raise UserError(
            f"pretrain: preset {cfg.preset!r} expects {model_cfg.vision.image_size}px images; scenes are "
            f"{SCENE_IMAGE_SIZE}px"
        )
    pp = ImagePreprocess(image_size=model_cfg.vision.image_size)
    model = Blip(model_cfg).train()
    # the masked LM's output layer (D -> V): trained, never saved
    mlm_head = torch.nn.Linear(model_cfg.text.width, tok.vocab_size) if cfg.mlm_weight > 0 else None
    trained = torch.nn.ModuleList([model] + ([mlm_head] if mlm_head is not None else []))
    opt = adamw(trained, cfg.weight_decay, cfg.lr, betas=(0.9, 0.98))
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    object_sets = [scene_objects(s) for s in scenes]
    single = np.array([i for i, s in enumerate(scenes) if len(s.objects) == 1])  # the curriculum's pool
    single_steps = round(cfg.single_object_fraction * cfg.steps) if len(single) else 0
    if cfg.text_lm_weight > 0 or cfg.mlm_weight > 0:  # general English, tokenised once: (S, L), [CLS] first
        text_ids, text_mask = tok.encode_batch(
            general_sentences(cfg.text_sentences, cfg.seed), max_len=cfg.max_text_len
        )
    # Each scene is drawn about steps * batch / scenes (3.2) times: render it once (64x64x3 uint8 each).
    images: dict[int, np.ndarray] = {}
    curve = []
    with Steps(cfg.steps, "pretrain", enabled=progress) as bar:  # closed (its thread ended) however the loop ends
        for step in bar:
            if step < single_steps:  # a pool smaller than a batch (a few-scene test run) repeats scenes, which
                # the losses allow: ITC and ITM treat equal object sets as positives
                idx = single[rng.choice(len(single), size=cfg.batch_size, replace=len(single) < cfg.batch_size)]
            else:
                idx = rng.choice(len(scenes), size=cfg.batch_size, replace=False)
            for i in idx:
                if i not in images:
                    images[i] = scenes[i].image
            pixels = preprocess([images[i] for i in idx], pp)
            captions = [scenes[i].captions[rng.integers(len(scenes[i].captions))] for i in idx]
            losses = pretraining_losses(model, tok, pixels, captions, [object_sets[i] for i in idx],
                                        cfg.label_smoothing, cfg.max_text_len, gen)
            loss = cfg.itc_weight * losses["itc"] + cfg.itm_weight * losses["itm"] + cfg.lm_weight * losses["lm"]
            if cfg.text_lm_weight > 0 or cfg.mlm_weight > 0:  # text alone (no image), as BERT-style text pre-training
                pick = torch.from_numpy(rng.choice(len(text_ids), size=cfg.batch_size, replace=False))
                ids, mask = text_ids[pick], text_mask[pick]
                keep = int(mask.sum(1).max())
                text = text_losses(model, mlm_head, tok, ids[:, :keep], mask[:, :keep], cfg, gen)  # (B, L') sentences
                losses.update(text)
                weights = {"mlm": cfg.mlm_weight, "text_lm": cfg.text_lm_weight}
                loss = loss + sum(weights[name] * value for name, value in text.items())
            for group in opt.param_groups:
                group["lr"] = cfg.lr * warmup_cosine(step, cfg.steps, cfg.warmup, floor=LR_FLOOR)
            optimizer_step(loss, opt, trained.parameters(), 1.0, step)
            if step % 50 == 0 or step == cfg.steps - 1:
                row = {"step": step, **{k: round(v.item(), 4) for k, v in losses.items()}}
                curve.append(row)
                bar.set_postfix(itc=row["itc"], itm=row["itm"], lm=row["lm"])
    model.eval()
    if single_steps:
        curriculum = (f"steps 0-{single_steps - 1} draw only the {len(single)} single-object training scenes; "
                      "later steps draw from all")
    else:
        curriculum = "none: every step draws from all scenes" + (
            " (no training scene has one object)" if cfg.single_object_fraction and not len(single) else "")
    if model.cfg.vision.stem_batchnorm:  # the checkpoint holds plain convolutions: no batch statistics downstream
        model.cfg = dataclasses.replace(model.cfg, vision=fold_stem_batchnorm(model.vision))
    record = {
        "objectives": ["itc", "itm", "lm"]
        + (["text_lm"] if cfg.text_lm_weight > 0 else [])
        + (["mlm"] if cfg.mlm_weight > 0 else []),
        "objective_details": {
            "itc": "in-batch, same-object-set pairs are positives",
            "itm": "one hard negative text and image per pair, sampled from ITC softmax",
            "lm": f"caption LM, label smoothing {cfg.label_smoothing}",
            **(
                {
                    "text_lm": f"text-only decoder LM on {cfg.text_sentences} template sentences of basic "
                    f"English (data/english.py), weight {cfg.text_lm_weight}: stands in for "
                    "the general text a BERT-initialised BLIP has read"
                    + (
                        f"; the decoder reads the encoder states of the sentence with "
                        f"{TEXT_LM_MASK_RATE:.0%} of its words masked (BART-style denoising)"
                        if cfg.text_lm_reads_encoder
                        else ""
                    )
                }
                if cfg.text_lm_weight > 0
                else {}
            ),
            **(
                {
                    "mlm": f"text-only masked LM of the text encoder on the same sentences, weight "
                    f"{cfg.mlm_weight}, {MLM_RATE:.0%} of tokens (80/10/10, BERT): stands in for "
                    "the BERT initialisation of BLIP's text encoder"
                }
                if cfg.mlm_weight > 0
                else {}
            ),
        },
        "data": scenes_recipe(cfg.seed, {"train": cfg.scenes}),
        "caption_corpus": "every caption phrasing of every training scene; one phrasing sampled per use",
        "curriculum": curriculum,
        "tokenizer_corpus": "captions, questions and answers of the training scenes, plus a basic English word list "
        "(data/english.py), WordPiece",
        "config": dataclasses.asdict(cfg),
        "steps": cfg.steps,
        "seed": cfg.seed,
        "examples_seen": cfg.steps * cfg.batch_size,
        "loss_curve": curve,
        "train_seconds": round(time.time() - started, 1),
        "peak_memory_mb": peak_memory_mb(device),
        "environment": environment(device),
    }
    made = not Path(out).exists()
    try:
        save_checkpoint(out, model, tok, pp, pretrain=record)
    except BaseException:
        if made:  # a folder this call made holds only what it wrote: an unfinished checkpoint goes whole
            shutil.rmtree(out, ignore_errors=True)
        raise
    return record


@torch.no_grad()
def evaluate_pretrained(model: Blip, tok: TextTokenizer, pp: ImagePreprocess, seed: int = 0,
                        n_caption: int = 500, n_retrieval: int = 1000, batch_size: int = 100) -> dict[str, Any]:
    """Held-out ('test' split) figures for a model pre-trained on scenes:

    - object precision / recall of greedy captions against the scene's ground-truth (colour, shape) set;
    - BLEU-4 / ROUGE-L / CIDEr-D of greedy captions against the scene's reference phrasings;
    - ITC image->text recall@1/@5 over `n_retrieval` scenes, each image's first caption as candidate;
      a hit is a retrieved caption whose text equals the image's own (identical scenes share text).
    """
    from vlpeft.data.scenes import object_precision_recall
    from vlpeft.model.generate import generate
    from vlpeft.tasks.metrics import caption_scores

    model.eval()
    scenes = generate_scenes(max(n_caption, n_retrieval), seed=seed, split="test")
    preds: list[str] = []
    img_feats, txt_feats = [], []
    for i in range(0, len(scenes), batch_size):
        chunk = scenes[i:i + batch_size]
        img = model.encode_image(preprocess([s.image for s in chunk], pp))
        if i < n_caption:
            preds += [
                tok.decode(t) for t in generate(model, img, max_new_tokens=min(40, model.cfg.text.max_positions - 1))
            ]
        if i < n_retrieval and model.itm_head is not None:
            ids, mask = tok.encode_batch([s.captions[0] for s in chunk], max_len=model.cfg.text.max_positions)
            img_feats.append(model.image_feature(img))
            txt_feats.append(model.text_feature(ids, mask))
    preds = preds[:n_caption]
    objects = object_precision_recall(preds, scenes[:n_caption])
    report: dict[str, Any] = {
        "held_out": {"split": "test", "seed": seed, "caption_scenes": n_caption, "retrieval_scenes": n_retrieval},
        "object_precision": objects.precision,
        "object_recall": objects.recall,
        **caption_scores(preds, [s.captions for s in scenes[:n_caption]]),
        "examples": [
            {"scene": s.scene_id, "caption": p, "reference": s.captions[0]} for s, p in zip(scenes[:5], preds[:5])
        ],
    }
    if img_feats:
        sim = torch.cat(img_feats)[:n_retrieval] @ torch.cat(txt_feats)[:n_retrieval].t()  # (N, N)
        texts = [s.captions[0] for s in scenes[:n_retrieval]]
        top = sim.topk(5, dim=1).indices.tolist()
        def hit(k):
            return float(np.mean([any(texts[j] == texts[i] for j in row[:k]) for i, row in enumerate(top)]))
        report["itc_i2t_recall@1"], report["itc_i2t_recall@5"] = hit(1), hit(5)
    return report

