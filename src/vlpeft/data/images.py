"""Image reading and BLIP preprocessing with Pillow + NumPy (torchvision is not available here).

`preprocess` reproduces transformers' BLIP image processor (PIL backend, `BlipImageProcessorPil`,
which `BlipImageProcessor` falls back to without torchvision) step for step, so a real BLIP
checkpoint sees the pixels it was trained on:

    x = PIL.resize(rgb_uint8, (S, S), BICUBIC)      # uint8 -> uint8: Pillow rounds inside resize
    x = float32(float64(x) * (1/255))               # rescale
    x = (x - mean) / std                            # per channel, float32
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from vlpeft.errors import UserError, did_you_mean

# OpenAI CLIP statistics, which BLIP (LAVIS and transformers) uses for normalisation.
BLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
BLIP_STD = (0.26862954, 0.26130258, 0.27577711)

ORIENTATION = 0x0112  # the EXIF tag

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open `path` and decode it fully into an RGB image (`to_rgb`).

    Decoding happens here (`.load()`), not lazily later inside a data loader worker, so a missing,
    truncated or corrupt file becomes a one-line UserError naming the file."""
    if "://" in str(path):
        raise UserError(f"{path}: a URL; vlpeft reads image files only: download it first")
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not an image file")
    if not path.is_file():
        raise UserError(f"{path}: image not found")
    return decode(path, str(path))


def decode(source, name: str) -> Image.Image:
    """Decode `source` (a path or a binary file object) fully into an RGB image; every failure is a
    one-line UserError naming `name`. An image past Pillow's pixel limit (`Image.MAX_IMAGE_PIXELS`,
    about 179 million, doubled before it refuses) is read without Pillow's warning; one past twice
    that is refused as what it probably is, a decompression bomb."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                image.load()
                return to_rgb(image)
    except UserError as e:
        raise UserError(f"{name}: {e}") from None
    except Image.DecompressionBombError as e:
        raise UserError(f"{name}: more pixels than Pillow decodes ({_one_line(e)}); a decompression bomb, "
                        f"or an image to shrink first") from e
    except Image.UnidentifiedImageError as e:  # its message may name a BytesIO object, which tells nothing
        raise UserError(f"{name}: cannot read image (not in an image format Pillow knows)") from e
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, zlib errors, ...
        raise UserError(f"{name}: cannot read image (truncated or corrupt file: {_one_line(e)})") from e


def _one_line(e: Exception) -> str:
    text = " ".join(str(e).split())
    return text[:200] if text else e.__class__.__name__


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB copy of `image`, upright and its content kept whatever its mode:
    - an EXIF Orientation tag (phone photos: stored sideways, shown upright) is applied, as every
      viewer, `datasets.Image` and transformers' `load_image` do;
    - 16- and 32-bit integer images (I;16, I;16B, I; e.g. 16-bit PNGs) are scaled from 0..65535 to
      0..255 (v / 257, rounded; values outside 0..65535 clipped), float images (F) from [0, 1] when
      every value lies there, else clipped to 0..255; Pillow's own conversion clips them, so a
      16-bit image would come out white;
    - transparency (LA, PA, RGBA, P with a transparent colour, ...) is composited onto white, as
      transformers does;
    - every other mode (1, L, P, CMYK, YCbCr, ...) goes through Pillow's conversion.
    A mode Pillow cannot convert is a one-line UserError."""
    if image.getexif().get(ORIENTATION, 1) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I") or image.mode == "F":
        values = np.asarray(image, dtype=np.float64)  # (H, W)
        if image.mode == "F":
            values = values * 255 if values.size and 0 <= values.min() and values.max() <= 1 else values
        else:
            values = np.clip(values, 0, 65535) / 257
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    try:
        has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
        if has_alpha:
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return image.convert("RGB")
    except ValueError as e:
        raise UserError(f"image mode {image.mode} cannot be converted to RGB ({e})") from None


@dataclass(frozen=True)
class ImagePreprocess:
    """How images become model input: a square resize and per-channel normalisation."""

    image_size: int
    mean: tuple[float, float, float] = BLIP_MEAN
    std: tuple[float, float, float] = BLIP_STD
    resample: str = "bicubic"

    def __post_init__(self) -> None:
        if self.image_size < 1:
            raise UserError(f"image preprocessing: image_size must be positive, got {self.image_size}")
        if self.resample not in _RESAMPLE:
            raise UserError(
                f"image preprocessing: unknown resample {self.resample!r}{did_you_mean(self.resample, _RESAMPLE)}"
            )
        if len(self.mean) != 3 or len(self.std) != 3:
            raise UserError("image preprocessing: mean and std need 3 values (R, G, B)")
        if min(self.std) <= 0:
            raise UserError(f"image preprocessing: std must be positive, got {self.std}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "ImagePreprocess":
        unknown = set(d) - {"image_size", "mean", "std", "resample"}
        if unknown:
            raise UserError(f"image preprocessing: unknown keys {sorted(unknown)}")
        if "image_size" not in d:
            raise UserError("image preprocessing: missing key 'image_size'")
        return ImagePreprocess(
            image_size=int(d["image_size"]),
            mean=tuple(float(v) for v in d.get("mean", BLIP_MEAN)),
            std=tuple(float(v) for v in d.get("std", BLIP_STD)),
            resample=str(d.get("resample", "bicubic")),
        )


def preprocess_array(image: Image.Image | np.ndarray, pp: ImagePreprocess) -> np.ndarray:
    """One image (PIL, or a uint8 array (H, W, 3) such as a synthetic scene) -> float32 (3, S, S)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    rgb = to_rgb(image)
    size = (pp.image_size, pp.image_size)
    if rgb.size != size:  # Pillow's resize to the same size is a copy; skip it
        rgb = rgb.resize(size, resample=_RESAMPLE[pp.resample])
    x = np.asarray(rgb)  # (S, S, 3) uint8
    x = (x.astype(np.float64) * (1 / 255)).astype(np.float32)  # (S, S, 3) in [0, 1]
    mean = np.asarray(pp.mean, dtype=np.float32)
    std = np.asarray(pp.std, dtype=np.float32)
    x = (x - mean) / std  # (S, S, 3), broadcast over the channel axis
    return np.ascontiguousarray(x.transpose(2, 0, 1))  # (3, S, S)


def preprocess(images: Sequence[Image.Image | np.ndarray], pp: ImagePreprocess) -> torch.Tensor:
    """A batch of PIL images (or uint8 arrays (H, W, 3)) -> FloatTensor (B, 3, S, S), normalised as BLIP expects."""
    if len(images) == 0:
        return torch.zeros(0, 3, pp.image_size, pp.image_size)
    batch = np.stack([preprocess_array(im, pp) for im in images])  # (B, 3, S, S)
    return torch.from_numpy(batch)


def check_images_exist(paths: Sequence[str | os.PathLike], listed_in: str | os.PathLike) -> None:
    """UserError naming the first missing file and how many are missing, if any of `paths` is absent."""
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise UserError(
            f"{missing[0]}: image not found ({len(missing)} of {len(paths)} images listed in {listed_in} are missing)"
        )


IMAGE_CACHE_BYTES = 2 * 1024**3  # decoded images kept in memory; every built-in task fits (< 100 MB)


_FILE_DIGESTS: dict[tuple, str] = {}  # (resolved path, inode, size, mtime ns) -> SHA-1 of the file's bytes


def file_digest(path: str | os.PathLike) -> str:
    """SHA-1 of a file's bytes: what identifies an image's content (never its name, size or time).
    Remembered per process under the file's stat, so an unchanged file is read once; a rewritten one
    (another inode, size or modification time) is hashed again. A file that cannot be read -> ''."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return ""
    key = (real, st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        h = hashlib.sha1()
        try:
            with open(real, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except OSError:
            return ""
        if len(_FILE_DIGESTS) > 1_000_000:
            _FILE_DIGESTS.clear()
        _FILE_DIGESTS[key] = h.hexdigest()
    return _FILE_DIGESTS[key]


class ImageCache:
    """image_id -> read-only uint8 (H, W, 3), decoded by `decode(source)` on first use and kept;
    beyond `max_bytes` the least recently used images are dropped (and decoded again if asked).
    `digest(image_id)` identifies the image's content (by default the SHA-1 of its file's bytes, for
    a source that is a path; `digest=` for other sources; '' where the source itself identifies it, e.g.
    a generated scene). Thread-safe: evaluation and training threads of one process share it."""

    def __init__(self, sources: dict[str, Any], decode: Callable[[Any], np.ndarray],
                 max_bytes: int = IMAGE_CACHE_BYTES, digest: Callable[[Any], str] | None = None):
        self._sources = sources
        self._decode = decode
        self._digest = digest if digest is not None else (
            lambda source: file_digest(source) if isinstance(source, (str, os.PathLike)) else "")
        self._max_bytes = max_bytes
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._sources

    def __len__(self) -> int:
        return len(self._sources)

    def source(self, image_id: str) -> Any:
        """Where the image comes from (a path, embedded bytes, a generated scene)."""
        return self._sources[image_id]

    def digest(self, image_id: str) -> str:
        """The content identity of the image (see class doc)."""
        return self._digest(self._sources[image_id])

    def __call__(self, image_id: str) -> np.ndarray:
        with self._lock:
            if image_id in self._cache:
                self._cache.move_to_end(image_id)
                return self._cache[image_id]
        if image_id not in self._sources:
            raise KeyError(f"no image with id {image_id!r} in this task")
        array = np.ascontiguousarray(self._decode(self._sources[image_id]), dtype=np.uint8)
        array.flags.writeable = False  # shared by every caller: nobody may draw on it
        with self._lock:
            if image_id not in self._cache:
                self._cache[image_id] = array
                self._bytes += array.nbytes
                while self._bytes > self._max_bytes and len(self._cache) > 1:
                    _, old = self._cache.popitem(last=False)
                    self._bytes -= old.nbytes
        return array


def decode_file(path: str | os.PathLike) -> np.ndarray:
    """An image file -> uint8 (H, W, 3) (one-line UserError naming the file if it does not decode)."""
    return np.asarray(load_image(path))
