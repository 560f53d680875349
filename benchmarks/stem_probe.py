"""How fast does the tiny ViT learn shape from scratch with each stem? A supervised probe.

    python benchmarks/stem_probe.py [--stems patch conv pool pool+bn] [--steps 300] [--threads 1]

For each stem, the tiny preset's ViT (everything but the stem as in the shipped `tiny`) is trained from
scratch, initialised as `Blip` initialises it, as a classifier of single-object synthetic scenes
(split "train", the scenes of the first 24,000 with one object): a linear head on the [CLS] state
predicts the shape (6-way) and the colour
(8-way), loss = CE(shape) + CE(colour), batch 32, AdamW lr 1e-3 (betas 0.9 / 0.98, weight decay
0.05), 50 warm-up steps and a cosine decay to 0.1x over `--steps`, gradient norm clipped at 1.
Every 100 steps it prints the shape and colour accuracy on 600 held-out single-object scenes (split
"val") and the time per step. Pre-training's signal for shape is far weaker than a label, so a stem
that is slow here is slow in pre-training too (docs/notes/2026-11-29-tiny-pretraining.md, "How the stem got here").
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch
import torch.nn.functional as F

STEMS = {"patch": ("patch", False), "conv": ("conv", False), "pool": ("pool", False), "pool+bn": ("pool", True)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stems", nargs="+", default=list(STEMS), choices=list(STEMS))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    from vlpeft.data.images import ImagePreprocess, preprocess
    from vlpeft.data.scenes import SCENE_COLORS, SCENE_SHAPES, generate_scenes
    from vlpeft.model.blip import _init_weights
    from vlpeft.model.config import PRESETS
    from vlpeft.model.vit import VisionTransformer, init_stem

    torch.set_num_threads(args.threads)
    train = [s for s in generate_scenes(24000, 0, "train") if len(s.objects) == 1]
    test = [s for s in generate_scenes(3000, 0, "val") if len(s.objects) == 1][:600]
    pp = ImagePreprocess(image_size=64)

    def labels(scenes):  # (B,) shape and (B,) colour indices
        return (torch.tensor([SCENE_SHAPES.index(s.objects[0].shape) for s in scenes]),
                torch.tensor([SCENE_COLORS.index(s.objects[0].color) for s in scenes]))

    x_test, (shape_test, colour_test) = preprocess([s.image for s in test], pp), labels(test)
    print(f"{len(train)} training and {len(test)} held-out single-object scenes; {args.steps} steps, "
          f"{args.threads} thread(s)")
    for name in args.stems:
        stem, bn = STEMS[name]
        torch.manual_seed(0)
        vit = VisionTransformer(dataclasses.replace(PRESETS["tiny"].vision, stem=stem, stem_batchnorm=bn))
        vit.apply(_init_weights)  # as Blip initialises it
        init_stem(vit.patch_embed)
        head = torch.nn.Linear(vit.cfg.width, len(SCENE_SHAPES) + len(SCENE_COLORS))
        params = list(vit.parameters()) + list(head.parameters())
        opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05, betas=(0.9, 0.98))
        rng = np.random.default_rng(0)
        images: dict[int, np.ndarray] = {}
        started = time.time()
        for step in range(args.steps):
            idx = rng.choice(len(train), 32, replace=False)
            for i in idx:
                images.setdefault(int(i), train[i].image)
            shape, colour = labels([train[i] for i in idx])
            t = max(0, step - 50) / max(1, args.steps - 50)
            for g in opt.param_groups:
                g["lr"] = 1e-3 * min(1.0, (step + 1) / 50) * (0.1 + 0.45 * (1 + np.cos(np.pi * t)))
            z = head(vit(preprocess([images[int(i)] for i in idx], pp))[:, 0])  # (B, 6 + 8)
            loss = F.cross_entropy(z[:, :len(SCENE_SHAPES)], shape) + F.cross_entropy(z[:, len(SCENE_SHAPES):], colour)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            if (step + 1) % 100 == 0 or step + 1 == args.steps:
                ms = (time.time() - started) / (step + 1) * 1000
                vit.eval()
                with torch.no_grad():
                    z = head(vit(x_test)[:, 0])
                vit.train()
                acc_shape = (z[:, :len(SCENE_SHAPES)].argmax(1) == shape_test).float().mean().item()
                acc_colour = (z[:, len(SCENE_SHAPES):].argmax(1) == colour_test).float().mean().item()
                print(f"{name:8s} step {step + 1:4d}  shape {acc_shape:.3f}  colour {acc_colour:.3f}  "
                      f"loss {loss.item():.3f}  {ms:.0f} ms/step", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
