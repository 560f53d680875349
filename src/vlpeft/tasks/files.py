"""Your own task, from files, with no code: a task file (YAML) names the data and how to read it.

    # my-captions.yaml                      (accepted wherever a task name is)
    name: my-captions                       # used in cell ids and reports
    kind: caption                           # caption | vqa
    format: jsonl                           # jsonl | csv | imagefolder | hf-disk | parquet | coco-karpathy | vqav2
    path: data/captions.jsonl               # the data file or folder, relative to this file
    image_root: data/images                 # optional: where relative image paths point (default: beside the data)
    fields: {caption: text}                 # optional: vlpeft field -> your column
    splits: {val: 0.1, test: 0.1, seed: 0}  # optional: how to carve splits the data does not give
    options: {prompt: "a picture of"}       # optional: the kind's options
    relation: new data, same task           # optional: relation to the checkpoint's pre-training, for reports

Fields of a row (jsonl, csv, imagefolder, hf-disk, parquet): `image` (a path, or an embedded image
in a Hugging Face dataset; imagefolder's `file_name`), `caption` or `captions` (a list) for
captioning, `question` and `answers` (a list of strings, or of {"answer": ...} objects) or `answer`
for VQA; optional `split` (train / val / test; also validation, dev), `image_id`, `question_id`,
`question_type`. One row per caption (rows of one image are merged) or per question.

Splits come from the data when it has them (a `split` field, imagefolder's split folders, a
DatasetDict's splits, Parquet file names); the splits it lacks are carved out of train by image
(`tasks.splits.carve`) with the recorded seed and fractions, so no image is ever in two splits and
a rerun carves the same ones. VQA candidate answers: every distinct normalised answer of train + val
(`answers: N` keeps the N most frequent).

`coco-karpathy` and `vqav2` read the official files with the built-in loaders: `path` is the Karpathy
file (or the LAVIS folder), or the folder holding the official VQAv2 JSON files (names may be set in
`files:`), `image_root` the COCO images (default: the folder of `path`).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlpeft.data import files as readers
from vlpeft.data.images import ImageCache
from vlpeft.errors import UserError, did_you_mean
from vlpeft.io import expand_path, hash_file
from vlpeft.tasks.base import SPLIT_NAMES, LoadContext, TaskData, TaskDef, get_kind
from vlpeft.tasks.rows import Rows
from vlpeft.tasks.splits import carve, check_fraction, image_ids, sources_digest, split_sizes
from vlpeft.validate import from_mapping

TABLE_FORMATS = {"jsonl": readers.read_jsonl, "csv": readers.read_csv, "imagefolder": readers.read_imagefolder,
                 "hf-disk": readers.read_hf_disk, "parquet": readers.read_parquet}
FORMATS = (*TABLE_FORMATS, "coco-karpathy", "vqav2")
ROW_FIELDS = ("image", "image_id", "split")  # every kind's rows; the kind adds its own (TaskKind.fields)
DEFAULT_FRACTIONS = {"val": 0.1, "test": 0.1}
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class TaskFile:
    """The keys of a task file."""

    name: str = field(metadata={"help": "task name (letters, digits, '-', '_', '.'); used in cell ids and reports"})
    kind: str = field(metadata={"help": "a task kind: caption or vqa"})
    format: str = field(metadata={"help": "how the data is stored", "choices": FORMATS})
    path: str = field(metadata={"help": "the data file or folder, relative to the task file"})
    image_root: str | None = field(default=None, metadata={"help": "folder that relative image paths start from "
                                                                    "(default: the data file's folder)"})
    fields: dict = field(default_factory=dict, metadata={"help": "vlpeft field -> your column name"})
    splits: dict = field(default_factory=dict, metadata={"help": "val / test fractions and seed for carving the "
                                                                 "splits the data lacks (default 0.1, 0.1, seed 0)"})
    options: dict = field(default_factory=dict, metadata={"help": "the kind's options (caption: prompt, num_beams; "
                                                                  "vqa: inference)"})
    answers: int | None = field(default=None, metadata={"help": "vqa: keep the N most frequent candidate answers "
                                                                "(default: all of train + val)"})
    answer_normalisation: str = field(default="vqa", metadata={
        "help": "vqa: how answers are compared: vqa (the official normalisation, which drops a/an/the) or "
                "keep-articles (the same, articles kept: for answers such as 'A'..'D')",
        "choices": ("vqa", "keep-articles")})
    files: dict = field(default_factory=dict, metadata={"help": "vqav2: official file names under `path`, by key"})
    relation: str = field(default="your data", metadata={"help": "relation to the checkpoint's pre-training, "
                                                                  "e.g. 'new data, same task' (for reports)"})
    description: str = field(default="", metadata={"help": "one sentence for reports"})


def is_task_file(ref: str) -> bool:
    return str(ref).endswith((".yaml", ".yml")) or os.path.isfile(str(ref))


def read_task_file(ref: str | os.PathLike) -> TaskDef:
    """Parse and validate a task file into a TaskDef (the data is read by `TaskDef.load`)."""
    from vlpeft.io import read_yaml
    from vlpeft.tasks.base import TASKS, task_options

    path = Path(ref)
    if not path.is_file():
        raise UserError(f"{path}: task file not found")
    data = read_yaml(path, "task file")
    if data is None:
        raise UserError(f"{path}: the task file is empty")
    tf = from_mapping(TaskFile, data, str(path), what="keys")
    where = str(path)
    try:
        get_kind(tf.kind)
    except UserError as e:
        raise UserError(f"{where}: kind: {e}") from None
    if not NAME.fullmatch(tf.name):
        raise UserError(f"{where}: name {tf.name!r} may hold only letters, digits, '-', '_' and '.'")
    if tf.name in TASKS:
        raise UserError(f"{where}: name {tf.name!r} is a built-in task; choose another name")
    base = path.resolve().parent
    settings = {"format": tf.format, "path": expand_path(tf.path, f"{where}: path", base),
                "image_root": expand_path(tf.image_root, f"{where}: image_root", base) if tf.image_root else None,
                "fields": _field_map(tf, where), "splits": _split_rule(tf.splits, where), "answers": tf.answers,
                "answer_normalisation": tf.answer_normalisation,
                "files": {str(k): expand_path(v, f"{where}: files.{k}", base) for k, v in tf.files.items()},
                "task_file_sha1": hashlib.sha1(path.read_bytes()).hexdigest()}
    if tf.answers is not None and (get_kind(tf.kind).candidates is None or tf.answers < 1):
        raise UserError(f"{where}: answers is a positive count of candidate answers, for a kind that ranks "
                        f"them (vqa)")
    if tf.answer_normalisation != "vqa" and (get_kind(tf.kind).candidates is None or tf.format == "vqav2"):
        raise UserError(f"{where}: answer_normalisation is for vqa task files of your own rows (VQAv2 keeps the "
                        f"official normalisation)")
    if tf.files and tf.format != "vqav2":
        raise UserError(f"{where}: files is for format vqav2 only")
    task = TaskDef(tf.name, tf.kind, tf.format, tf.relation, tf.description or f"{tf.kind} task from {path.name}",
                   load_file_task, options=dict(tf.options), file=str(path.resolve()), settings=settings)
    task_options(task, where=f"{where}: options")  # validated now, by the kind
    return task


DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".arrow")  # what a task's records are stored in


_DATA_DIGESTS: dict[tuple, str] = {}


def data_digest(task: TaskDef) -> str:
    """SHA-1 over the files holding a task file's records: `path` itself, or every .jsonl / .json / .csv
    / .parquet / .arrow file under it (and `files`), by relative name and content. Images are not read:
    the records name them. A study compares it on resume, so edited data is not mixed with old runs."""
    s = task.settings
    root = Path(s["path"])
    found = [root] if root.is_file() else sorted(
        p for p in root.rglob("*") if p.suffix in DATA_SUFFIXES and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts))
    found += [Path(f) for _, f in sorted(s["files"].items()) if Path(f).is_file() and Path(f) not in found]
    key = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in found)
    if key not in _DATA_DIGESTS:  # remembered per process: a study worker asks once per cell
        h = hashlib.sha1()
        for p in found:
            h.update(f"{p.name if p == root or not p.is_relative_to(root) else p.relative_to(root)}\0".encode())
            hash_file(h, p)
        _DATA_DIGESTS[key] = h.hexdigest()[:16]
    return _DATA_DIGESTS[key]


def _field_map(tf: TaskFile, where: str) -> dict[str, str]:
    known = ROW_FIELDS + get_kind(tf.kind).fields
    out = {name: name for name in known}
    if tf.format == "imagefolder":
        out["image"] = "file_name"  # the Hugging Face imagefolder convention
    for ours, theirs in tf.fields.items():
        if ours not in known:
            raise UserError(f"{where}: fields: {ours!r} is not a {tf.kind} field{did_you_mean(str(ours), known)} "
                            f"(fields: {', '.join(known)})")
        if not isinstance(theirs, str) or not theirs:
            raise UserError(f"{where}: fields.{ours} must name a column, got {theirs!r}")
        out[ours] = theirs
    return out


def _split_rule(raw: dict, where: str) -> dict[str, Any]:
    unknown = set(raw) - {"val", "test", "seed"}
    if unknown:
        key = sorted(unknown)[0]
        raise UserError(f"{where}: splits: unknown key {key!r}{did_you_mean(str(key), ['val', 'test', 'seed'])} "
                        f"(keys: val, test, seed)")
    rule = {name: check_fraction(raw.get(name, f), f"{where}: splits.{name}") for name, f in DEFAULT_FRACTIONS.items()}
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"{where}: splits.seed must be an integer >= 0, got {seed!r}")
    return {**rule, "seed": seed}


# ---------------------------------------------------------------------------------------------
# Loading


def load_file_task(task: TaskDef, ctx: LoadContext) -> TaskData:
    s = task.settings
    if s["format"] == "coco-karpathy":
        return _load_coco(task, s)
    if s["format"] == "vqav2":
        return _load_vqav2(task, s)
    kind = get_kind(task.kind)
    records = TABLE_FORMATS[s["format"]](s["path"])  # at least one, or a UserError
    rows = Rows(s["fields"], s["image_root"], keep_articles=s.get("answer_normalisation") == "keep-articles")
    examples = kind.from_rows(records, rows)
    readers.check_image_files([(rows.first_row[i], ref) for i, ref in rows.refs.items()], s["path"])
    splits, rule = _splits(examples, rows.splits, s["splits"], s["path"])
    answers = kind.answer_list(splits["train"] + splits["val"], s["answers"])
    sources = {i: rows.refs[i] for i in image_ids(splits["train"] + splits["val"] + splits["test"])}
    details = {"task": task.name, "task_file": task.file, "task_file_sha1": s["task_file_sha1"],
               "source": f"{s['format']} {s['path']}", "image_root": s["image_root"], "fields": s["fields"],
               "splits": rule, "split_seed": s["splits"]["seed"], "sizes": split_sizes(splits),
               "answers": len(answers), "embedded_images": sum(1 for r in sources.values() if r.data is not None)}
    digest = sources_digest({i: r.data if r.data is not None else r.path for i, r in sources.items()})
    return TaskData(task, splits["train"], splits["val"], splits["test"], answers,
                    ImageCache(sources, readers.decode_image, digest=readers.image_digest), f"files:{digest}", details)


def _splits(examples, given: dict[str, str | None], rule: dict, where: str) -> tuple[dict[str, list], dict]:
    """Splits from the data where it has them; the missing ones carved out of train by image."""
    named = {s for s in given.values() if s is not None}
    if named and None in given.values():
        missing = next(i for i, s in given.items() if s is None)
        raise UserError(f"{where}: image {missing!r} has no split while others do; give every row a split or none")
    fractions = {k: rule[k] for k in ("val", "test")}
    if not named:
        splits = carve(examples, fractions, rule["seed"], where)
        return splits, {name: (f"{fractions[name]:.0%} of the images, seeded (seed {rule['seed']})" if name != "train"
                               else "the other images") for name in SPLIT_NAMES}
    if "train" not in named:
        raise UserError(f"{where}: the data names splits {sorted(named)} but no train split")
    by_split = {name: [e for e in examples if given[e.image_id] == name] for name in SPLIT_NAMES}
    lacking = {name: f for name, f in fractions.items() if not by_split[name]}
    described = {name: "given in the data" for name in SPLIT_NAMES if by_split[name]}
    if lacking:
        carved = carve(by_split["train"], lacking, rule["seed"], where)
        by_split.update(carved)
        for name in lacking:
            described[name] = f"{lacking[name]:.0%} of the train images, seeded (seed {rule['seed']})"
        described["train"] = "given in the data, less the carved images"
    return by_split, described


def _load_coco(task: TaskDef, s: dict) -> TaskData:
    from vlpeft.tasks.coco import load_coco

    root = s["image_root"] or str(Path(s["path"]).parent if Path(s["path"]).is_file() else s["path"])
    data = load_coco(task, LoadContext(paths={"karpathy_json": s["path"], "image_root": root}))
    data.details["task_file"] = task.file
    return data


def _load_vqav2(task: TaskDef, s: dict) -> TaskData:
    from vlpeft.tasks.vqav2 import PATH_HELP, load_vqav2_task

    folder = Path(s["path"])
    if not folder.is_dir():
        raise UserError(f"{folder}: format vqav2 takes the folder holding the official VQAv2 JSON files")
    paths = {key: str(folder / PATH_HELP[key].split(" ")[0]) for key in PATH_HELP if key != "image_root"}
    paths.update(s["files"])
    unknown = set(s["files"]) - set(paths)
    if unknown:
        key = sorted(unknown)[0]
        raise UserError(f"{task.file}: files: unknown key {key!r}{did_you_mean(key, paths)}")
    if "test_questions" not in s["files"] and not Path(paths["test_questions"]).is_file():
        del paths["test_questions"]
    paths["image_root"] = s["image_root"] or str(folder)
    data = load_vqav2_task(task, LoadContext(paths=paths))
    data.details["task_file"] = task.file
    return data


__all__ = ["TaskFile", "read_task_file", "is_task_file", "load_file_task", "FORMATS"]
