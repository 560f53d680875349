"""Use a checkpoint, or a fine-tuning run on it, on images of your own: caption them, or answer
questions about them (`vlpeft caption`, `vlpeft answer`, and the functions below).

A run is used with its own settings: its task kind's options (captions: prompt, beams, length; VQA:
the inference mode, BLIP's ranking of the task's candidate answers or free generation) and, where it
ranks, the candidate answers of the task it was trained on; options given here override them. Its
base checkpoint must be the one it adapted (the same checkpoint digest, as `vlpeft evaluate` checks).
Without a run the checkpoint is used as it is; a VQA task (`task=`) then lends its options and its
candidate answers, and without one answers are generated.

Predictions go through the task kind's own `predict` (the function evaluation scores), on images
decoded as everywhere else (any mode to RGB, EXIF orientation applied: `vlpeft.data.images`).

    from vlpeft.recipes import infer
    p = infer.predictor("tiny", "vqa", run="runs/try-lora")      # no `run`: the checkpoint alone
    infer.predict(p, ["cat.png"], ["what shape is in the image?"])  # -> ["circle"]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

import vlpeft
from vlpeft.data.images import decode_file
from vlpeft.data.records import CaptionExample, VQAExample
from vlpeft.errors import UserError
from vlpeft.model.checkpoint import scene_seed_of
from vlpeft.recipes.evaluate import check_base, read_record
from vlpeft.recipes.prepare import check_text_room, resolve_device
from vlpeft.tasks import cached_task, get_kind, get_task, task_data_digest
from vlpeft.validate import from_mapping

KINDS = ("caption", "vqa")
COMMANDS = {"caption": "vlpeft caption", "vqa": "vlpeft answer"}
CHUNK = 32  # images predicted at a time: the batch form's memory does not grow with its input


@dataclass(frozen=True)
class Predictor:
    """A model ready to predict for one task kind, with that kind's options and candidate answers."""

    loaded: Any  # vlpeft.model.checkpoint.LoadedModel, PEFT weights of the run applied
    kind: Any  # vlpeft.tasks.TaskKind: caption or vqa
    options: Any  # the kind's options (CaptionOptions / VQAOptions)
    answers: tuple[str, ...]  # VQA candidate answers (ranking); () otherwise
    max_text_len: int  # tokens kept per text (the run's)
    run: str | None  # the run folder whose weights are applied, if any


@dataclass(frozen=True)
class Images:
    """What a kind's `predict` reads from task data: images by id (here: their paths) and, for VQA
    ranking, the candidate answers."""

    image: Callable[[str], np.ndarray]
    answers: tuple[str, ...] = ()


def predictor(model: str, kind: str, run: str | Path | None = None, task: str | None = None,
              options: dict | None = None, allow_other_base: bool = False, device: str = "auto") -> Predictor:
    """`model` (a checkpoint: tiny, a folder or a hub id), with the PEFT weights of `run` applied if
    given, ready to predict for `kind` ("caption" or "vqa"). `options` override the kind's options
    (the run's, else `task`'s, else the kind's defaults)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    record = None
    if run is not None:
        record = read_record(run)
        if record.task_kind != kind:
            raise UserError(f"{run}: this run was trained for {record.task_kind} ({record.task}); "
                            f"use `{COMMANDS.get(record.task_kind, 'vlpeft evaluate')}`")
    loaded = vlpeft.load_model(model)  # first: a damaged checkpoint is named as such
    if record is not None:
        check_base(record, run, model, allow_other_base, "use")
    the_kind = get_kind(kind)
    task_def = get_task(task) if task is not None else None
    if task_def is not None and task_def.kind != kind:
        raise UserError(f"task {task_def.name} is a {task_def.kind} task, not {kind}")
    if record is not None and task_def is not None and task_def.name != record.task:
        raise UserError(f"{run}: this run was trained on {record.task!r}, not {task_def.name!r} ({task})")
    given = dict(record.task_options) if record is not None else dict(task_def.options) if task_def else {}
    positions = loaded.model.cfg.text.max_positions  # the checkpoint alone: every position its own
    max_text_len = int(record.config.get("max_text_len", positions)) if record is not None else positions
    opts = from_mapping(the_kind.options, {**given, **(options or {})}, f"{kind} options")
    check_text_room(max_text_len, model, the_kind, opts, loaded.model.cfg, loaded.tokenizer, kind)
    answers: tuple[str, ...] = ()
    if kind == "vqa" and opts.inference == "rank":
        if task_def is None and record is not None:
            task_def = get_task(record.task_ref)  # the run's task: its candidate answers
        if task_def is None:  # the checkpoint alone and no task: nothing to rank, answers are generated
            opts = from_mapping(the_kind.options, {**given, **(options or {}), "inference": "generate"},
                                f"{kind} options")
        else:
            if record is not None and record.task_data_digest is not None and \
                    task_data_digest(task_def) != record.task_data_digest:
                raise UserError(f"{run}: the records of task {record.task} changed since this run was trained, "
                                f"so its candidate answers did too; train it again on the data as it is")
            seed = scene_seed_of(loaded.pretrain, record.scene_seed if record is not None else None)
            paths = record.config.get("paths") if record is not None else None
            answers = tuple(cached_task(task_def.ref, scene_seed=seed, paths=paths).answers)
    device_ = resolve_device(device)
    loaded.model.to(device_)
    for part in the_kind.parts:
        if getattr(loaded.model, part) is None:
            raise UserError(f"{model}: {kind} needs a {part}, which this checkpoint lacks")
    if run is not None:
        from vlpeft.peft import load_peft

        load_peft(loaded.model, run)
    loaded.model.eval()
    return Predictor(loaded, the_kind, opts, answers, max_text_len, None if run is None else str(run))


def predict(p: Predictor, images: Sequence[str | Path], questions: Sequence[str] | None = None,
            decode: Callable[[str], np.ndarray] = decode_file) -> list[str]:
    """One caption per image (caption predictors), or one answer per (image, question) (VQA). Images
    are files, read by `decode` (default: as everywhere else); an image asked about twice is read once."""
    if p.kind.name == "vqa":
        if questions is None or len(questions) != len(images):
            raise ValueError("a VQA predictor needs one question per image")
        examples = [VQAExample(str(i), str(path), str(path), q, ()) for i, (path, q) in
                    enumerate(zip(images, questions))]
    else:
        examples = [CaptionExample(str(path), str(path), ()) for path in images]
    decoded: dict[str, np.ndarray] = {}

    def image(image_id: str) -> np.ndarray:
        if image_id not in decoded:
            decoded[image_id] = decode(image_id)
        return decoded[image_id]

    with torch.inference_mode():
        return p.kind.predict(p.loaded.model, examples, Images(image, p.answers), p.loaded, p.options,
                              p.max_text_len)


def read_inputs(path: str | Path, kind: str) -> list[tuple[str, str | None, dict, str]]:
    """The lines of a batch input file (JSON Lines: `image`, and `question` for answers; other keys
    are carried to the output) -> (image path, question, the line's object, where it is). Every line is checked
    and every image found before any prediction: a bad line is one UserError naming it."""
    from vlpeft.data.files import read_jsonl

    wanted = ("image", "question") if kind == "vqa" else ("image",)
    out = []
    for rec in read_jsonl(path):
        for key in wanted:
            value = rec.values.get(key)
            if not isinstance(value, str) or not value.strip():
                raise UserError(f"{rec.where}: needs a {key!r} (text), got {json.dumps(value)[:60]}")
        image = Path(rec.values["image"])
        image = image if image.is_absolute() else Path(rec.base) / image
        if not image.is_file():
            raise UserError(f"{rec.where}: image {rec.values['image']!r} not found ({image})")
        out.append((str(image), rec.values.get("question"), rec.values, rec.where))
    return out


def write_lines(rows: Iterator[dict], output: str | Path | None) -> int:
    """JSON Lines to `output` (written whole or not at all: a failure half-way leaves no file and an
    existing one as it was) or, without one, to stdout as they come. -> lines written."""
    import sys

    from vlpeft.io import atomic_path

    n = 0
    if output is None:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False), flush=True)
            n += 1
        return n
    with atomic_path(output) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    print(f"{n} lines written to {output}", file=sys.stderr)
    return n


def predict_lines(p: Predictor, lines: Sequence[tuple], field: str) -> Iterator[dict]:
    """Each input line's object with its prediction under `field`, CHUNK lines at a time (a line
    whose image does not decode is a UserError naming the line)."""
    for start in range(0, len(lines), CHUNK):
        chunk = lines[start:start + CHUNK]
        where_of: dict[str, str] = {}
        for path, _, _, where in chunk:
            where_of.setdefault(path, where)

        def decode(path: str) -> np.ndarray:
            try:
                return decode_file(path)
            except UserError as e:
                raise UserError(f"{where_of[path]}: {e}") from e

        preds = predict(p, [c[0] for c in chunk], [c[1] for c in chunk] if p.kind.name == "vqa" else None, decode)
        for (_, _, values, _), pred in zip(chunk, preds):
            yield {**values, field: pred}


__all__ = ["Predictor", "predictor", "predict", "read_inputs", "predict_lines", "write_lines", "KINDS"]
