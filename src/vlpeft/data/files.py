"""Readers of a researcher's own caption / VQA tables, in the layouts people keep them in.

Each reader returns plain `Record`s (one table row, the file and line it came from, its split, and the
folder its relative image paths start from); a task layer turns rows into examples. Nothing here knows
what a caption or a question is, and no image is decoded while reading: `resolve_image` turns a row's
image value into an `ImageRef`, `check_image_files` checks the files exist, `decode_image` reads pixels.

Layouts:
- JSON Lines (`read_jsonl`) and CSV (`read_csv`): one row per object / line; image paths relative to
  the file's folder.
- Hugging Face `imagefolder` (`read_imagefolder`): images with a `metadata.jsonl` or `metadata.csv`
  whose `file_name` column names each image, at the root or in split folders (train/, validation/, ...).
- A `datasets` dataset written with `save_to_disk` (`read_hf_disk`), a `Dataset` or a `DatasetDict`.
- Parquet (`read_parquet`): one file or a folder of files named as on the Hub (`train-00000-of-00002.parquet`).

Split names follow the Hub's keywords (https://huggingface.co/docs/hub/datasets-file-names-and-splits):
train/training, validation/valid/val/dev, test/testing/eval/evaluation; we call them train, val, test.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import io
import json
import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow
import pyarrow.parquet as pq

from vlpeft.data.images import decode, file_digest, load_image
from vlpeft.errors import UserError

# The Hub's split keywords (datasets.data_files.SPLIT_KEYWORDS), mapped onto our three names.
_SPLIT_KEYWORDS = {
    "train": "train", "training": "train",
    "validation": "val", "valid": "val", "val": "val", "dev": "val",
    "test": "test", "testing": "test", "eval": "test", "evaluation": "test",
}
_SPLIT_ORDER = ("train", "val", "test")

# The Hub finds a split keyword in a file path when non-word characters delimit it ("train-0000.parquet",
# "data/validation.parquet"; not "trainset.parquet"). These are its delimiters, plus the folder separator.
_PATH_DELIMITERS = re.compile(r"[-._ 0-9/\\]+")

_METADATA_FILES = ("metadata.jsonl", "metadata.csv")


@dataclass(frozen=True)
class ImageRef:
    """Where one row's image is: a file, or encoded bytes embedded in the table."""

    path: str  # absolute path of an image file, or "" when the image is embedded
    data: bytes | None  # the embedded encoded image (Parquet / save_to_disk Image columns), else None
    name: str  # for messages and ids: the path as written in the data, the embedded image's own 'path', or the row


@dataclass(frozen=True)
class Record:
    """One table row as read, with where it came from."""

    source: str  # the file (or saved split folder) the row came from
    row: str  # "line 3" (JSONL/CSV: 1-based physical line) or "row 12" (Parquet/Arrow: 0-based index)
    values: dict  # column -> value; HF Image columns are {"bytes": ..., "path": ...} dicts
    split: str | None  # "train" | "val" | "test" when the layout names one, else None
    base: str  # absolute folder that relative image paths of this row are relative to

    @property
    def where(self) -> str:
        """'<source>: <row>', the prefix of every error about this row."""
        return f"{self.source}: {self.row}"


def normalise_split(name: str, where: str) -> str:
    """A split name as the Hub spells it (train, training, validation, valid, val, dev, test, testing,
    eval, evaluation; any case) -> "train" | "val" | "test"."""
    split = _SPLIT_KEYWORDS.get(name.lower())
    if split is None:
        raise UserError(f"{where}: unknown split {name!r}; use train, validation (val) or test")
    return split


def _not_json(name: str):
    raise ValueError(f"{name} is not JSON (a value must be a string, a number, a list or an object)")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} given twice in one object")
        out[key] = value
    return out


def read_jsonl(path: str | os.PathLike) -> list[Record]:
    """JSON Lines: one JSON object per line, e.g. {"image": "img/1.png", "caption": "a red square"}.

    Blank lines are skipped; line numbers count physical lines. Relative image paths start at the file's folder."""
    path = _require_file(path)
    records = []
    with _open_text(path) as f:
        for n, line in enumerate(_lines(f, path), start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line, parse_constant=_not_json, object_pairs_hook=_unique_keys)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}: line {n}: not valid JSON ({e.msg} at column {e.colno})") from e
            except ValueError as e:  # NaN / Infinity, or a key given twice
                raise UserError(f"{path}: line {n}: {e}") from e
            if not isinstance(value, dict):
                raise UserError(f"{path}: line {n}: expected a JSON object, got {_json_type(value)}")
            records.append(_record(path, f"line {n}", value))
    if not records:
        raise UserError(f"{path}: no records")
    return records


def read_csv(path: str | os.PathLike) -> list[Record]:
    """CSV with a header row (UTF-8, a byte-order mark is fine): each row -> {column: text}.

    A cell holding a list becomes that list: JSON (["a dog", "a brown dog"]) or a Python list literal
    (['a dog', 'a brown dog'], how pandas writes a list column). A cell in brackets holding quotes or
    commas that is neither is an error, not one long answer; other bracketed text stays text. Quoted
    cells may span lines; a row's line is the physical line it starts on."""
    path = _require_file(path)
    records = []
    with _open_text(path, newline="") as f:
        reader = csv.reader(f, strict=True)
        header, header_line, end_line = None, 0, 0
        try:
            for cells in reader:
                start_line, end_line = end_line + 1, reader.line_num  # a row spans start_line..end_line
                if not cells:  # a blank line
                    continue
                if header is None:
                    header, header_line = _csv_header(cells, path, start_line), start_line
                    continue
                if len(cells) != len(header):
                    raise UserError(
                        f"{path}: line {start_line}: {len(cells)} cells but the header (line {header_line}) "
                        f"has {len(header)} columns"
                    )
                values = {column: _csv_cell(cell, path, start_line, column) for column, cell in zip(header, cells)}
                records.append(_record(path, f"line {start_line}", values))
        except csv.Error as e:  # strict: a stray quote, or one never closed, is an error, not a swallowed file
            raise UserError(f"{path}: line {end_line + 1}: not valid CSV ({e})") from e
        except UnicodeDecodeError as e:
            raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    if not records:
        raise UserError(f"{path}: no records")
    return records


def read_imagefolder(folder: str | os.PathLike) -> list[Record]:
    """The Hugging Face `imagefolder` layout (https://huggingface.co/docs/datasets/image_dataset):

        folder/metadata.jsonl                   one split:  {"file_name": "0001.png", "caption": "..."}
        folder/train/metadata.jsonl             or one metadata file per split folder (train, validation,
        folder/validation/metadata.csv             test, or the Hub's other split names)

    `file_name` is the image's path relative to the metadata file's folder (rows keep the column as written;
    `load_dataset("imagefolder")` would call it `image`). A folder holds metadata.jsonl or metadata.csv, not both."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: imagefolder not found (expected a folder)")
    root_metadata = _metadata_file(folder)
    split_folders = []  # (split, subfolder, its metadata file) for each subfolder with one
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        metadata = _metadata_file(sub)
        if metadata is not None:
            split_folders.append((normalise_split(sub.name, str(sub)), sub, metadata))
        elif sub.name.lower() in _SPLIT_KEYWORDS and root_metadata is None:
            raise UserError(f"{sub}: split folder has no metadata.jsonl or metadata.csv")
    if root_metadata is not None and split_folders:
        raise UserError(
            f"{folder}: has both {root_metadata.name} and split folders with metadata "
            f"({', '.join(sub.name for _, sub, _ in split_folders)}); keep one layout"
        )
    if root_metadata is not None:
        return _read_metadata(root_metadata, None)
    if not split_folders:
        raise UserError(
            f"{folder}: no imagefolder metadata; expected metadata.jsonl or metadata.csv with a 'file_name' "
            "column, in the folder or in split folders (train/, validation/, test/)"
        )
    split_folders.sort(key=lambda item: _SPLIT_ORDER.index(item[0]))  # stable: folder names stay sorted
    records = []
    for split, _, metadata in split_folders:
        records += _read_metadata(metadata, split)
    return records


def read_hf_disk(folder: str | os.PathLike) -> list[Record]:
    """A `datasets.Dataset` or `DatasetDict` written with `save_to_disk(folder)`, read offline.

    `datasets.Image` columns are read without decoding, as {"bytes": ..., "path": ...} dicts. A
    DatasetDict's keys name the splits (train, validation, test, ...); its rows' source is
    `folder/<key>`. Relative image paths start at `folder`."""
    import datasets  # imported here: it takes a second, and only this reader needs it

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: saved dataset not found (expected a folder written by save_to_disk)")
    try:
        loaded = datasets.load_from_disk(str(folder))
    except Exception as e:  # FileNotFoundError for a plain folder; JSON / Arrow errors for damaged files
        raise UserError(f"{folder}: not a dataset saved with save_to_disk ({_one_line(e)})") from e
    if isinstance(loaded, datasets.DatasetDict):
        parts = [(normalise_split(key, f"{folder}/{key}"), folder / key, loaded[key]) for key in loaded]
        parts.sort(key=lambda part: _SPLIT_ORDER.index(part[0]))
    else:
        parts = [(None, folder, loaded)]
    base = os.path.abspath(folder)
    records = []
    for split, source, dataset in parts:
        for column, feature in dataset.features.items():
            if isinstance(feature, datasets.Image):
                dataset = dataset.cast_column(column, datasets.Image(decode=False))  # no data is rewritten
        for i, values in enumerate(dataset.to_list()):
            records.append(Record(str(source), f"row {i}", values, split, base))
    if not records:
        raise UserError(f"{folder}: no records")
    return records


def read_parquet(path: str | os.PathLike) -> list[Record]:
    """One `.parquet` file, or every `.parquet` file under a folder (recursively; train, val, then test
    files, each in path order).

    Splits come from the file names as on the Hub: `train.parquet`, `train-00000-of-00002.parquet`,
    `data/validation-00000-of-00001.parquet`, `test/0000.parquet` (for a single file, its name alone).
    Either every file names a split or none does. An image column written by `datasets` (a struct of
    bytes and path) becomes a {"bytes": ..., "path": ...} dict. Relative image paths start at the file's folder."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("*.parquet"))
        if not files:
            raise UserError(f"{path}: no .parquet files in this folder")
        names = [f.relative_to(path).as_posix() for f in files]
    elif path.is_file():
        files, names = [path], [path.name]
    else:
        raise UserError(f"{path}: file not found")
    entries = [(_split_in_path(name, str(file)), name, file) for name, file in zip(names, files)]
    named = [name for split, name, _ in entries if split]
    unnamed = [name for split, name, _ in entries if not split]
    if named and unnamed:
        raise UserError(
            f"{path}: {named[0]} names a split but {unnamed[0]} does not; name every file after its split "
            "(train-*.parquet, validation-*.parquet, test-*.parquet) or none"
        )
    if named:  # train files first, then val, then test; sort is stable, so path order within a split
        entries.sort(key=lambda entry: _SPLIT_ORDER.index(entry[0]))
    records = []
    for split, _, file in entries:
        try:
            rows = pq.read_table(file).to_pylist()
        except (pyarrow.ArrowException, OSError) as e:
            raise UserError(f"{file}: not a readable Parquet file ({_one_line(e)})") from e
        records += [_record(file, f"row {i}", values, split) for i, values in enumerate(rows)]
    if not records:
        raise UserError(f"{path}: no records")
    return records


def resolve_image(
    value: Any, base: str | os.PathLike, where: str, image_root: str | os.PathLike | None = None
) -> ImageRef:
    """A row's image value -> ImageRef, without touching the file system.

    A path string is relative to `image_root` if given, else to `base` (absolute paths stay); a dict with
    non-empty "bytes" is an embedded image; a dict with only a "path" is that path."""
    written = value
    if isinstance(value, dict):
        data = value.get("bytes")
        if isinstance(data, (bytes, bytearray)) and data:
            return ImageRef(path="", data=bytes(data), name=str(value.get("path") or where))
        written = value.get("path")
    if not isinstance(written, str) or not written:
        raise UserError(f"{where}: no image (field value {_short(value)})")
    if written.startswith("file://"):
        written = urllib.parse.unquote(urllib.parse.urlparse(written).path)
    elif re.match(r"[A-Za-z][A-Za-z0-9+.-]+://", written):
        raise UserError(f"{where}: image {_short(written)} is a URL; images are read offline: download them and "
                        "name the local files (or embed them in a Parquet or datasets file)")
    start = image_root if image_root is not None else base
    return ImageRef(path=os.path.abspath(os.path.join(start, written)), data=None, name=written)


def check_image_files(refs: Sequence[ImageRef | tuple[str, ImageRef]], listed_in: str | os.PathLike) -> None:
    """UserError naming the first missing image file (and its row, when `refs` holds (where, ref) pairs)
    and how many are missing; embedded images count as present."""
    pairs = [item if isinstance(item, tuple) else (None, item) for item in refs]
    missing = [(where, ref) for where, ref in pairs if ref.data is None and not os.path.isfile(ref.path)]
    if missing:
        where, ref = missing[0]
        named_at = f"named at {where}; " if where else ""
        count = f"{len(missing)} of {len(pairs)} images listed in {listed_in} are missing"
        raise UserError(f"{ref.path}: image not found ({named_at}{count})")


def image_digest(ref: ImageRef) -> str:
    """What identifies the image's content: the SHA-1 of its file's bytes, or of the embedded bytes."""
    return hashlib.sha1(ref.data).hexdigest() if ref.data is not None else file_digest(ref.path)


def decode_image(ref: ImageRef) -> np.ndarray:
    """The image's pixels, uint8 (H, W, 3) RGB (transparency composited onto white); a fresh, writable array."""
    if ref.data is None:
        return np.array(load_image(ref.path), dtype=np.uint8)  # (H, W, 3)
    return np.array(decode(io.BytesIO(ref.data), ref.name), dtype=np.uint8)  # (H, W, 3)


# --- helpers ---------------------------------------------------------------------------------------


def _record(path: Path, row: str, values: dict, split: str | None = None) -> Record:
    return Record(str(path), row, values, split, os.path.abspath(path.parent))


def _require_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {'not a file' if path.exists() else 'file not found'}")
    return path


def _open_text(path: Path, newline: str | None = None):
    """Open as UTF-8 text, a byte-order mark skipped."""
    try:
        return open(path, encoding="utf-8-sig", newline=newline)
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from e


def _lines(f, path: Path):
    """The file's lines, with a decoding error as a one-line UserError."""
    try:
        yield from f
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e


def _csv_header(cells: list[str], path: Path, line: int) -> list[str]:
    header = [cell.strip() for cell in cells]
    if "" in header:
        raise UserError(f"{path}: line {line}: header column {header.index('') + 1} has no name")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise UserError(f"{path}: line {line}: header repeats column {repeated[0]!r}")
    return header


def _csv_cell(text: str, path: Path, line: int, column: str) -> Any:
    """A cell's text, or the list it spells: JSON first, then a Python literal of plain values. A
    bracketed cell with quotes or commas that is neither is a broken list: an error."""
    stripped = text.strip()
    if not (stripped.startswith("[") and stripped.endswith("]")):
        return text
    try:
        value = json.loads(stripped, parse_constant=_not_json)
    except ValueError:  # (JSONDecodeError too)
        try:
            value = ast.literal_eval(stripped)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            value = None
        if not (isinstance(value, list) and all(isinstance(v, (str, int, float, dict)) for v in value)):
            if not any(c in stripped for c in "\"',"):  # "[music playing]": text in brackets, not a list
                return text
            raise UserError(
                f"{path}: line {line}: column {column!r} holds {_short(stripped)}, in brackets but not a JSON "
                'list such as ["a", "b"] (nor a Python list of values)'
            ) from None
    return value


def _metadata_file(folder: Path) -> Path | None:
    """The folder's imagefolder metadata file, None without one; both kinds at once is an error."""
    found = [folder / name for name in _METADATA_FILES if (folder / name).is_file()]
    if len(found) > 1:
        raise UserError(f"{folder}: holds both metadata.jsonl and metadata.csv; keep one")
    return found[0] if found else None


def _read_metadata(path: Path, split: str | None) -> list[Record]:
    """One imagefolder metadata file's rows, each with its `file_name`, in the split its folder names."""
    rows = read_jsonl(path) if path.suffix == ".jsonl" else read_csv(path)
    for r in rows:
        if "file_name" not in r.values:
            raise UserError(f"{r.where}: no 'file_name' (imagefolder metadata names each row's image file in it)")
    return [Record(r.source, r.row, r.values, split, r.base) for r in rows]


def _split_in_path(name: str, where: str) -> str | None:
    """The split a Hub-style data file path names ("data/train-00000-of-00002.parquet" -> "train"), or None."""
    stem = name[: -len(".parquet")] if name.endswith(".parquet") else name
    words = [word.lower() for word in _PATH_DELIMITERS.split(stem)]
    found = {_SPLIT_KEYWORDS[word] for word in words if word in _SPLIT_KEYWORDS}
    if len(found) > 1:
        raise UserError(f"{where}: file path names more than one split ({', '.join(sorted(found))})")
    return found.pop() if found else None


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {list: "an array", str: "a string", type(None): "null"}[type(value)]


def _short(value: Any) -> str:
    """repr(value) cut to 80 characters (an image dict's bytes can be long)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _one_line(e: Exception) -> str:
    """An exception's message on one line (its first non-empty line), or its class name."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else e.__class__.__name__
