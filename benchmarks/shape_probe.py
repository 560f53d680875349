"""Does a checkpoint's ViT encode shape? Linear probes on its frozen image states.

    python benchmarks/shape_probe.py [--model tiny] [--random] [--scenes 3000]

Held-out single-object scenes (split "val" of the generator); a 6-way logistic-regression probe
(L-BFGS, small L2, features standardised on the training part) trained on 70 % of the objects and
scored on the rest, for four feature sets: the ViT token of the patch at the object's centre, the
mean of the tokens over the object's box, the [CLS] token, and (the ceiling) the raw grey pixels of
a 24x24 crop around the object. `--random` probes the same architecture untrained.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def probe(features: np.ndarray, labels: np.ndarray, train: np.ndarray, classes: int) -> np.ndarray:
    """Fit on `train` rows, return the predictions for the others."""
    mu, sd = features[train].mean(0), features[train].std(0) + 1e-6
    x = torch.tensor((features - mu) / sd, dtype=torch.float32)
    W = torch.zeros(x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], max_iter=300)
    y = torch.tensor(labels[train])

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x[train] @ W + b, y) + 1e-3 * (W ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (x[~train] @ W + b).argmax(1).numpy()


def probe_parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--random", action="store_true", help="probe the untrained architecture")
    return p


def probed_model(args):
    """(the loaded checkpoint, its model in eval mode, or the same architecture untrained with --random)"""
    import vlpeft
    from vlpeft.model.blip import Blip

    loaded = vlpeft.load_model(args.model)
    model = loaded.model
    if args.random:
        torch.manual_seed(0)
        model = Blip(model.cfg)
    return loaded, model.eval()


def main() -> int:
    p = probe_parser(__doc__)
    p.add_argument("--scenes", type=int, default=3000)
    args = p.parse_args()
    from vlpeft.data.images import preprocess
    from vlpeft.data.scenes import SCENE_IMAGE_SIZE, generate_scenes

    loaded, model = probed_model(args)
    patch, side = model.cfg.vision.patch_size, SCENE_IMAGE_SIZE // model.cfg.vision.patch_size
    feats: dict[str, list] = {"centre token": [], "box mean": [], "[CLS]": [], "raw pixels (ceiling)": []}
    shapes, sizes = [], []
    scenes = [s for s in generate_scenes(args.scenes, seed=0, split="val") if len(s.objects) == 1]
    with torch.no_grad():
        for i in range(0, len(scenes), 100):
            chunk = scenes[i:i + 100]
            states = model.encode_image(preprocess([s.image for s in chunk], loaded.preprocess))  # (B, 1 + N, D)
            for s, h in zip(chunk, states):
                o = s.objects[0]
                grid = h[1:].view(side, side, -1)  # (side, side, D)
                feats["centre token"].append(grid[min(o.y, 63) // patch, min(o.x, 63) // patch].numpy())
                rows = slice(max(0, o.y - o.radius) // patch, min(63, o.y + o.radius) // patch + 1)
                cols = slice(max(0, o.x - o.radius) // patch, min(63, o.x + o.radius) // patch + 1)
                feats["box mean"].append(grid[rows, cols].reshape(-1, h.shape[-1]).mean(0).numpy())
                feats["[CLS]"].append(h[0].numpy())
                grey = np.asarray(s.image, dtype=np.float32).mean(-1)
                cy, cx = min(max(o.y, 12), 51), min(max(o.x, 12), 51)
                feats["raw pixels (ceiling)"].append(grey[cy - 12:cy + 12, cx - 12:cx + 12].reshape(-1))
                shapes.append(o.shape)
                sizes.append(o.size)
    names = sorted(set(shapes))
    y = np.array([names.index(v) for v in shapes])
    large = np.array(sizes) == "large"
    train = np.arange(len(y)) < int(0.7 * len(y))
    print(f"{args.model}{' (untrained)' if args.random else ''}: {len(y)} single-object scenes, "
          f"{(~train).sum()} scored, chance {1 / len(names):.3f}")
    for name, f in feats.items():
        ok = probe(np.array(f), y, train, len(names)) == y[~train]
        print(
            f"  {name:22s} {ok.mean():.3f}  (large {ok[large[~train]].mean():.3f}, small "
            f"{ok[~large[~train]].mean():.3f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
