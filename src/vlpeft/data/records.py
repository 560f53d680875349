"""Plain records shared by every data loader (scenes, easy-VQA, COCO, VQAv2).

Loaders return lists of these; tasks and recipes never see a source's own JSON layout.
Identifiers are strings everywhere (COCO and VQAv2 integer ids are written in decimal), so
records from different sources can be mixed, sorted and written to JSON the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from vlpeft.errors import UserError


@dataclass(frozen=True)
class CaptionExample:
    """One image with its reference captions (COCO has ~5, synthetic scenes 3 or more)."""

    image_id: str
    image_path: str
    captions: tuple[str, ...]


@dataclass(frozen=True)
class VQAExample:
    """One question about one image, with every reference answer the source gives.

    VQAv2 gives 10 human answers (repeats kept: the VQA accuracy counts them); easy-VQA and the
    synthetic scenes give one. `answers` is empty when the source has no annotations (VQAv2 test-dev).
    `question_type` is the source's own label ("color", "yes/no", "what is the", ...), "" when absent.
    """

    question_id: str
    image_id: str
    image_path: str
    question: str
    answers: tuple[str, ...]
    question_type: str = ""
    answer_type: str = ""
    keep_articles: bool = False  # answers normalised without dropping a/an/the (a task file's choice)


def require_keys(entry: Any, keys: tuple[str, ...], where: str, path: str | os.PathLike) -> None:
    """UserError '<path>: <where> lacks key ...' unless `entry` is a JSON object with every key."""
    if not isinstance(entry, dict):
        raise UserError(f"{path}: {where} is not an object")
    for key in keys:
        if key not in entry:
            raise UserError(f"{path}: {where} lacks key '{key}'")
