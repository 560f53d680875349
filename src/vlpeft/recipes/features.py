"""Frozen image features, computed once per image and reused.

When a run's method leaves the image encoder exactly as pre-trained (every vision parameter frozen
and none added: no prompts, prefixes, adapters, LoRA or IA3 vectors there) and the encoder has no
dropout, its output for an image is the same in every step of every epoch, in training and in
evaluation, and in every run of a study that shares the checkpoint. `image_encoder` then returns a
function that encodes each image once, so later epochs and later runs skip the ViT entirely (and
the training batches need no pixels). Two tiers:

- memory (per process): a dict of states (1 + N, D), capped by VLPEFT_FEATURE_CACHE_MB (default
  1024; 0 turns the whole cache off); past the cap images are encoded as usual;
- disk (shared by every worker of a study, and by later studies of the same checkpoint): one `.npy`
  file per image under `cache_dir/<key>/`, where key = SHA-1 of (the vision weights, the data
  source, the preprocessing) and the file name is the SHA-1 of the image id and the image's content
  (`ImageCache.digest`: the SHA-1 of the file's bytes), so a file replaced under the same name is
  encoded again, never served old states. The memory tier is keyed the same way. Files are written to
  a unique temporary name and renamed into place, so concurrent workers never read half a file (two
  workers encoding the same image write the same bytes; the last rename wins). A file that does not
  load is treated as missing. Writes stop once the folder holds `disk_cap_mb` (re-measured every
  256 writes, so concurrent workers may overshoot by a few hundred files), or when the disk would
  keep less than min(1 GiB, half its size) free; nothing is evicted.
  States are stored bit for bit in their own dtype, so a state read from disk is exactly the one
  that was computed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from vlpeft.data.images import preprocess

_STORE: dict[tuple, torch.Tensor] = {}
_BYTES = 0
_DISK: dict[str, "DiskCache"] = {}
RESCAN_EVERY = 256
# Images encoded together. Every batch the cache encodes holds exactly this many (padded), because an
# image's states must not depend on which other images happened to be missing with it: on a CPU a lone
# image takes another kernel path and its states differ in the 6th digit, enough to change a run's
# course, so a cell run inside a study (whose workers share the disk tier) scored differently from the
# same cell run alone (docs/notes/2026-12-07-quick-preset-whole-run.md).
CHUNK = 16
# Part of the disk tier's key: states written before CHUNK padding (some encoded alone) are not reused.
ENCODING = "chunk16"


def room_left(folder: Path, size: int) -> bool:
    """Whether `size` more bytes of cache leave the disk with its reserve: min(1 GiB, half the disk)
    free, so a cache never takes the room the study's results need."""
    import shutil

    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:  # (made by the first write)
        folder = folder.parent
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return False
    return usage.free - size >= min(2**30, usage.total // 2)


def cache_limit_bytes() -> int:
    return int(float(os.environ.get("VLPEFT_FEATURE_CACHE_MB", "1024")) * 2**20)


def vision_untouched(model) -> bool:
    """True when the image encoder computes exactly what the pre-trained one did, in any mode."""
    if model.vision is None or model.cfg.vision.dropout > 0:
        return False
    state = getattr(model, "peft_state", None)
    backbone = state.backbone_names if state is not None else None
    for name, p in model.vision.named_parameters():
        if p.requires_grad or (backbone is not None and f"vision.{name}" not in backbone):
            return False
    return True


_DIGESTS: dict[tuple, tuple[str, list]] = {}  # per process: the vision tensors' identities -> digest


def vision_digest(model) -> str:
    """SHA-1 over the vision tower's state. Remembered per process for the same tensor objects at the
    same version (an in-place change bumps a tensor's version): the cells of a study worker share one
    loaded checkpoint's tensors (`peft.shared_copy`), so the tower is hashed once per checkpoint."""
    tensors = sorted([*model.vision.named_parameters(), *model.vision.named_buffers()], key=lambda x: x[0])
    key = tuple((name, id(t), t._version) for name, t in tensors)
    if key not in _DIGESTS:  # the entry holds the tensors, so their ids are not reused while it lives
        h = hashlib.sha1()
        for name, t in sorted(model.vision.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        if len(_DIGESTS) >= 4:  # a few checkpoints per worker; never a growing pile of freed runs' tensors
            _DIGESTS.pop(next(iter(_DIGESTS)))
        _DIGESTS[key] = (h.hexdigest(), [t for _, t in tensors])
    return _DIGESTS[key][0]


class DiskCache:
    """One cache key's folder of per-image `.npy` files (see module doc). Failures to write (full
    disk, read-only folder) turn the disk tier off for this process; they never fail a run."""

    def __init__(self, root: Path, key: str, meta: dict, cap_bytes: int):
        self.folder = root / key
        self.root, self.cap, self.writes, self.enabled = root, cap_bytes, 0, True
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            meta_path = self.folder / "meta.json"
            if not meta_path.exists():
                self._replace(meta_path, json.dumps(meta, indent=1, sort_keys=True).encode())
        except OSError:
            self.enabled = False
        self.used = folder_bytes(root) if self.enabled else 0

    def path(self, image_id: str, content: str) -> Path:
        h = hashlib.sha1(f"{image_id}\0{content}".encode()).hexdigest()
        return self.folder / h[:2] / f"{h}.npy"

    def get(self, image_id: str, content: str) -> torch.Tensor | None:
        try:
            return torch.from_numpy(np.load(self.path(image_id, content), allow_pickle=False))
        except (OSError, ValueError, EOFError):
            return None

    def put(self, image_id: str, content: str, state: torch.Tensor) -> None:
        if not self.enabled:
            return
        if self.writes % RESCAN_EVERY == RESCAN_EVERY - 1:
            self.used = folder_bytes(self.root)  # other workers write too
        array = state.detach().cpu().contiguous().numpy()
        size = array.nbytes + 128  # + the .npy header
        if self.used + size > self.cap or not room_left(self.root, size):
            return
        path = self.path(image_id, content)
        data = io.BytesIO()
        np.save(data, array, allow_pickle=False)
        try:
            path.parent.mkdir(exist_ok=True)
            self._replace(path, data.getvalue())
        except OSError:
            self.enabled = False
            return
        self.used += size
        self.writes += 1

    @staticmethod
    def _replace(path: Path, data: bytes) -> None:
        """Write under a unique temporary name, then rename: readers see the old file or the whole new
        one. No fsync (unlike vlpeft.io.atomic_path): a cache file lost in a crash is recomputed."""
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def folder_bytes(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def disk_cache(cache_dir: str | os.PathLike, digest: str, source: str, cap_mb: float) -> DiskCache:
    key = hashlib.sha1(f"{digest}\n{source}\n{ENCODING}".encode()).hexdigest()[:20]
    root = Path(cache_dir)
    if str(root / key) not in _DISK:
        _DISK[str(root / key)] = DiskCache(root, key, {"vision_sha1": digest, "source": source}, int(cap_mb * 2**20))
    return _DISK[str(root / key)]


def image_encoder(model, task, pp, source: str, cache_dir: str | os.PathLike | None = None,
                  disk_cap_mb: float = 8192) -> Callable[[Sequence[str]], torch.Tensor]:
    """image ids -> image states (B, N, D), each image encoded once (see module doc). Only for a
    model whose vision encoder is untouched. `source` names the images and their preprocessing;
    `cache_dir` adds the shared disk tier."""
    if not vision_untouched(model):
        raise ValueError("image_encoder: the vision encoder is trained or modified; its states cannot be cached")

    def plain(ids: Sequence[str]) -> torch.Tensor:
        """The states of `ids` (at most CHUNK), encoded as one batch of exactly CHUNK images (the last
        image repeated): the kernels, and so the bits, do not depend on how many were missing."""
        device = next(model.parameters()).device
        pixels = preprocess([task.image(i) for i in ids], pp).to(device)  # (b, 3, H, W)
        pixels = torch.cat([pixels, pixels[-1:].expand(CHUNK - len(ids), *pixels.shape[1:])])  # (CHUNK, 3, H, W)
        return model.encode_image(pixels)[:len(ids)]  # (b, N, D)

    digest = vision_digest(model)
    prefix = (digest, source)
    disk = disk_cache(cache_dir, digest, source, disk_cap_mb) if cache_dir is not None else None

    def remember(key: tuple, s: torch.Tensor) -> None:
        global _BYTES
        if _BYTES + s.numel() * s.element_size() <= cache_limit_bytes():
            _STORE[key] = s
            _BYTES += s.numel() * s.element_size()

    def cached(ids: Sequence[str]) -> torch.Tensor:
        device = next(model.parameters()).device
        content = {i: task.image.digest(i) for i in dict.fromkeys(ids)}  # the image's bytes, not its name
        key = {i: (prefix, i, c) for i, c in content.items()}
        fresh: dict[str, torch.Tensor] = {}
        missing = []
        for i in content:
            if key[i] in _STORE:
                continue
            s = disk.get(i, content[i]) if disk is not None else None
            if s is not None:
                fresh[i] = s.to(device)
                remember(key[i], fresh[i])
            else:
                missing.append(i)
        for start in range(0, len(missing), CHUNK):
            chunk = missing[start:start + CHUNK]
            with torch.no_grad():  # not inference_mode: the states are inputs of graphs that backpropagate
                states = plain(chunk)  # (b, N, D)
            for i, s in zip(chunk, states):
                s = s.clone()
                fresh[i] = s
                remember(key[i], s)
                if disk is not None:
                    disk.put(i, content[i], s)
        return torch.stack([fresh[i] if i in fresh else _STORE[key[i]] for i in ids])  # (B, N, D)

    return cached


def clear() -> None:
    """Forget the memory tier (the disk tier stays on disk)."""
    global _BYTES
    _STORE.clear()
    _DISK.clear()
    _BYTES = 0
