"""From a user's table rows to examples: what both kinds' `from_rows` share.

A `Rows` reads the fields of one table (`fields`: vlpeft field -> the user's column), resolves each
row's image, and keeps a book of images: an image id names one file, one file has one image id (a
file is known by its resolved path, links followed, or an embedded image by its bytes, so
`img/1.png`, `./img/1.png` and a link to it are one image), and an image belongs to one split.
Every problem is a one-line UserError starting with the row's "<file>: line N".
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from vlpeft.data import files as readers
from vlpeft.errors import UserError, did_you_mean


class Rows:
    def __init__(self, fields: dict[str, str], image_root: str | None, keep_articles: bool = False):
        self.fields, self.image_root = fields, image_root
        self.keep_articles = keep_articles  # vqa: the task file's answer_normalisation is keep-articles
        self.refs: dict[str, readers.ImageRef] = {}  # image id -> its image
        self.splits: dict[str, str | None] = {}  # image id -> the split the data gives it (None: none)
        self.first_row: dict[str, str] = {}  # image id -> where it first appears
        self.by_file: dict[str, str] = {}  # file_identity(ref) -> its image id

    def value(self, rec, name: str, required: bool = True) -> Any:
        """The row's value of field `name` (through the remapping); None if absent and not required."""
        column = self.fields[name]
        if column not in rec.values:
            if not required:
                return None
            names = list(map(str, rec.values))
            raise UserError(f"{rec.where}: no field {column!r}{did_you_mean(column, names)} "
                            f"(fields: {', '.join(sorted(names))}; map yours with `fields:` in the task file)")
        return rec.values[column]

    def values(self, rec, one: str, many: str) -> list | None:
        """The values of a single-value field and its list form (e.g. caption, captions), joined;
        None when the row has neither."""
        a, b = self.value(rec, one, required=False), self.value(rec, many, required=False)
        if a is None and b is None:
            return None
        return [v for x in (a, b) if x is not None for v in (x if isinstance(x, list) else [x])]

    @staticmethod
    def text(rec, value: Any, what: str) -> str:
        """Non-empty text, stripped."""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise UserError(f"{rec.where}: empty {what}" if isinstance(value, str) or value is None
                            else f"{rec.where}: {what} must be text, got {value!r}")
        return value.strip()

    def image(self, rec) -> str:
        """The row's image id (its `image_id` field, else the image's name as written), its file and
        split entered in the book: one id naming two files, or one image in two splits, is refused."""
        ref = readers.resolve_image(self.value(rec, "image"), rec.base, rec.where, self.image_root)
        given = self.value(rec, "image_id", required=False)
        identity = file_identity(ref)
        known_id = self.by_file.get(identity)
        if given not in (None, ""):
            image_id = str(given)
            if known_id is not None and known_id != image_id:
                raise UserError(f"{rec.where}: image id {image_id!r} names {ref.name}, the file that "
                                f"{self.first_row[known_id]} calls {known_id!r}; one file is one image")
        else:
            image_id = known_id if known_id is not None else ref.name
        split_value = self.value(rec, "split", required=False)
        split = rec.split if split_value in (None, "") else readers.normalise_split(str(split_value), rec.where)
        known = self.refs.setdefault(image_id, ref)
        self.by_file.setdefault(identity, image_id)
        if file_identity(known) != identity:
            raise UserError(f"{rec.where}: image id {image_id!r} names {ref.name}, but {self.first_row[image_id]} "
                            f"gave it {known.name}")
        self.first_row.setdefault(image_id, rec.where)
        seen = self.splits.setdefault(image_id, split)
        if seen != split:
            raise UserError(f"{rec.where}: image {image_id!r} is in split {split or '(none)'} here but in "
                            f"{seen or '(none)'} at {self.first_row[image_id]}; an image belongs to one split")
        return image_id


def file_identity(ref: readers.ImageRef) -> str:
    """What makes two rows' images one image: the file's resolved path (symbolic links followed, `.`,
    `..` and doubled slashes gone) or, for an image embedded in the table, its bytes' hash."""
    if ref.data is not None:
        return "sha256:" + hashlib.sha256(ref.data).hexdigest()
    return os.path.realpath(ref.path)
