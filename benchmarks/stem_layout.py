"""The image encoder's stem on channels-last input vs the default layout: a training step's ratio.

    python benchmarks/stem_layout.py [--model runs/tiny] [--threads N] [--batch 32] [--reps 15]

The ViT forward + backward of one batch (as in pre-training and full fine-tuning, where the vision
tower trains) with `vlpeft.model.vit.STEM_MEMORY_FORMAT` set to channels-last (the default) and to
torch.contiguous_format, the two sides alternating repetition by repetition after warm-up (medians;
bench.py's `interleaved`). Also checks that both layouts give the same output (max abs diff).
Random weights of the tiny preset when --model is missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench import interleaved, med  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="runs/tiny")
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = all cores")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--reps", type=int, default=15)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import vlpeft
    from vlpeft.model import vit
    from vlpeft.model.blip import Blip
    from vlpeft.model.config import preset

    vision = (vlpeft.load_model(args.model).model if Path(args.model).is_dir() else Blip(preset("tiny"))).vision.train()
    size = vision.cfg.image_size
    pixels = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0))

    def side(layout):
        def step() -> torch.Tensor:
            vit.STEM_MEMORY_FORMAT = layout
            vision.zero_grad(set_to_none=True)
            out = vision(pixels)
            out.square().mean().backward()
            return out.detach()
        return step

    times, first = interleaved({"channels_last": side(torch.channels_last),
                                "contiguous": side(torch.contiguous_format)}, warmup=3, reps=args.reps)
    vit.STEM_MEMORY_FORMAT = torch.channels_last
    cl, nchw = med(times["channels_last"]), med(times["contiguous"])
    diff = float((first["channels_last"] - first["contiguous"]).abs().max())
    print(f"ViT forward+backward, batch {args.batch}, {torch.get_num_threads()} threads, stem {vision.cfg.stem}: "
          f"channels-last {1000 * cl:.1f} ms, contiguous {1000 * nchw:.1f} ms, ratio {cl / nchw:.3f}; "
          f"max abs output diff {diff:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
