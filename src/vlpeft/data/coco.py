"""COCO Captions with the Karpathy split, in either of the two files people have:

- Karpathy's `dataset_coco.json`:
  {"images": [{"filepath": "val2014", "filename": "COCO_val2014_000000391895.jpg", "cocoid": 391895,
               "split": "train|restval|val|test", "sentences": [{"raw": "...", "tokens": [...]}, ...]}, ...]}
  `restval` counts as train (the 113k-image training set of BLIP and most captioning papers).
- LAVIS/BLIP's per-split lists `coco_karpathy_{train,val,test}.json`:
  [{"image": "val2014/COCO_val2014_000000391895.jpg", "caption": "..." or ["...", ...], "image_id": ...}, ...]
  (train has one entry per caption; val/test one entry per image with a list of captions).

Image paths are `image_root/filepath/filename` (Karpathy) or `image_root/image` (LAVIS).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from vlpeft.data.images import check_images_exist
from vlpeft.data.records import CaptionExample, require_keys
from vlpeft.errors import UserError, did_you_mean
from vlpeft.io import read_json

COCO_SPLITS = ("train", "val", "test")
_KARPATHY_SPLIT = {"train": "train", "restval": "train", "val": "val", "test": "test"}


def load_coco_karpathy(
    json_path: str | os.PathLike,
    image_root: str | os.PathLike,
    split: str | None = None,
    check_images: bool = True,
) -> list[CaptionExample]:
    """Captioned images of one Karpathy split, in file order.

    `split` is required for `dataset_coco.json`. A LAVIS list file holds one split already; `split`
    may then be None, and if given must agree with a `coco_karpathy_<split>.json` file name."""
    json_path = Path(json_path)
    if split is not None and split not in COCO_SPLITS:
        hint = did_you_mean(split, COCO_SPLITS)
        raise UserError(f"COCO: unknown split {split!r}{hint}; use one of {list(COCO_SPLITS)}")
    data = read_json(json_path, "COCO captions file")
    if isinstance(data, dict):
        if "images" not in data:
            raise UserError(
                f"{json_path}: expected key 'images' (Karpathy dataset_coco.json) "
                f"or a list of {{'image', 'caption'}} entries (LAVIS coco_karpathy_*.json); "
                f"found keys {sorted(data)[:5]}"
            )
        if split is None:
            raise UserError(f"{json_path}: holds every Karpathy split; name one of {list(COCO_SPLITS)}")
        examples = _from_karpathy(data["images"], json_path, Path(image_root), split)
    elif isinstance(data, list):
        examples = _from_lavis(data, json_path, Path(image_root), split)
    else:
        raise UserError(
            f"{json_path}: expected a JSON object with key 'images' or a list of entries, found {type(data).__name__}"
        )
    if check_images:
        check_images_exist([e.image_path for e in examples], json_path)
    return examples


def _from_karpathy(images: Any, json_path: Path, image_root: Path, split: str) -> list[CaptionExample]:
    if not isinstance(images, list):
        raise UserError(f"{json_path}: 'images' must be a list, found {type(images).__name__}")
    examples, seen_splits = [], set()
    for k, entry in enumerate(images):
        require_keys(entry, ("filename", "split", "sentences"), f"images[{k}]", json_path)
        entry_split = _KARPATHY_SPLIT.get(entry["split"])
        if entry_split is None:
            raise UserError(f"{json_path}: images[{k}] has unknown split {entry['split']!r}")
        seen_splits.add(entry["split"])
        if entry_split != split:
            continue
        captions = tuple(_sentence_text(s, f"images[{k}]", json_path) for s in entry["sentences"])
        if not captions:
            raise UserError(f"{json_path}: images[{k}] ({entry['filename']}) has no sentences")
        image_id = str(entry.get("cocoid", entry.get("imgid", _coco_id(entry["filename"]))))
        path = image_root / entry.get("filepath", "") / entry["filename"]
        examples.append(CaptionExample(image_id=image_id, image_path=str(path), captions=captions))
    if not examples:
        present = ", ".join(sorted(seen_splits)) or "none"
        raise UserError(f"{json_path}: no images in split '{split}' (splits present: {present})")
    return examples


def _sentence_text(sentence: Any, where: str, json_path: Path) -> str:
    text = None
    if isinstance(sentence, dict) and isinstance(sentence.get("raw"), str):
        text = sentence["raw"].strip()
    elif isinstance(sentence, dict) and isinstance(sentence.get("tokens"), list):
        text = " ".join(sentence["tokens"])
    if text is None:
        raise UserError(f"{json_path}: {where} has a sentence without 'raw' text")
    if not text:
        raise UserError(f"{json_path}: {where} has an empty caption")
    return text


def _from_lavis(entries: list, json_path: Path, image_root: Path, split: str | None) -> list[CaptionExample]:
    named = re.search(r"coco_karpathy_(train|val|test)\.json$", json_path.name)
    if split is not None and named and named.group(1) != split:
        raise UserError(f"{json_path}: this file holds the '{named.group(1)}' split, not '{split}'")
    if not entries:
        raise UserError(f"{json_path}: no images (the list is empty)")
    by_image: dict[str, tuple[str, list[str]]] = {}  # image -> (image_id, captions); dicts keep file order
    for k, entry in enumerate(entries):
        require_keys(entry, ("image", "caption"), f"entry {k}", json_path)
        caption = entry["caption"]
        captions = [caption] if isinstance(caption, str) else caption
        if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            raise UserError(f"{json_path}: entry {k} has a 'caption' that is neither a string nor a list of strings")
        image = entry["image"]
        if image not in by_image:
            image_id = entry.get("image_id")
            by_image[image] = (_lavis_image_id(image_id, image), [])
        if not captions or not all(c.strip() for c in captions):
            raise UserError(f"{json_path}: entry {k} ({image}) has an empty caption")
        by_image[image][1].extend(c.strip() for c in captions)
    return [
        CaptionExample(image_id=image_id, image_path=str(image_root / image), captions=tuple(captions))
        for image, (image_id, captions) in by_image.items()
    ]


def _lavis_image_id(image_id: Any, image: str) -> str:
    """LAVIS writes 'coco_391895' or leaves the id out: use the COCO number either way."""
    if image_id is None:
        return _coco_id(image)
    text = str(image_id)
    return text[len("coco_"):] if text.startswith("coco_") else text


def _coco_id(filename: str) -> str:
    """'val2014/COCO_val2014_000000391895.jpg' -> '391895'; any other name -> its stem."""
    m = re.search(r"_(\d+)\.\w+$", filename)
    return str(int(m.group(1))) if m else Path(filename).stem
