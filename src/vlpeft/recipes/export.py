"""`vlpeft export RUN --format peft|merged --out DIR`: a fine-tuning run folder as files the standard
libraries load, so it can be used without vlpeft.

- `peft`: Hugging Face peft's adapter folder (adapter_config.json + adapter_model.safetensors) for
  `peft.PeftModel.from_pretrained(<transformers BLIP of the base checkpoint>, DIR)`: LoRA, (IA)^3. The
  base must be a transformers BLIP checkpoint (a folder or a hub id), as the adapter goes on top of it.
- `merged`: a transformers BLIP checkpoint folder (config.json, model.safetensors, tokenizer and
  image processor files) with the trained weights folded in, for
  `transformers.BlipFor...from_pretrained(DIR)` and `BlipProcessor.from_pretrained(DIR)`: LoRA,
  (IA)^3, BitFit, full, frozen.

The transformers class follows the run's task kind: captioning -> BlipForConditionalGeneration,
VQA -> BlipForQuestionAnswering. Everything else is refused in one line before anything is written
(`vlpeft.peft.export.REFUSED` says why). The base checkpoint is the run's own (metrics.json
`config.model`) unless `model` names another, which must have the same checkpoint digest (as
`vlpeft evaluate` checks) unless `allow_other_base`.

DIR is written whole or not at all: into a new hidden folder beside it, renamed onto DIR at the end
(an existing DIR must be empty, or is replaced with `force`); a failure leaves DIR as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator

import vlpeft
from vlpeft.errors import UserError
from vlpeft.io import check_writable, disk_error
from vlpeft.model.checkpoint import locate
from vlpeft.model.hf import config_to_hf
from vlpeft.peft import load_peft
from vlpeft.peft.export import FORMATS, export_hf_checkpoint, export_hf_peft, export_refusal, hf_blip_class
from vlpeft.recipes.evaluate import check_base, read_record


def export_run(run_dir: str | Path, out: str | Path, fmt: str, model: str | None = None, force: bool = False,
               allow_other_base: bool = False) -> dict[str, Any]:
    """Export the run folder `run_dir` in format `fmt` ("peft" or "merged") to the folder `out`; see
    the module doc. Returns what was written: format, method, transformers class, base, folder, files."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: unknown; use one of {', '.join(FORMATS)}")
    run_dir, out = Path(run_dir), Path(out)
    record = read_record(run_dir)
    why = export_refusal(record.method, fmt)
    if why is not None:
        raise UserError(f"{run_dir}: a {record.method} run does not export to the {fmt} format: {why}")
    base = model if model is not None else record.config.get("model")
    if not base:
        raise UserError(f"{run_dir / 'metrics.json'}: records no base checkpoint (config.model); give --model")
    _check_out(out, force, run_dir, locate(base))
    loaded = vlpeft.load_model(base)  # first: a damaged checkpoint is named as such, not as another one
    check_base(record, run_dir, str(base), allow_other_base, "export")
    architecture = hf_blip_class(loaded.model, record.task_kind)
    config_to_hf(loaded.model.cfg, architecture, str(base))  # a model transformers cannot hold: refused here
    if fmt == "peft" and loaded.kind != "transformers":
        raise UserError(f"{base}: a vlpeft-format checkpoint, which transformers cannot load as the adapter's base; "
                        f"export --format merged instead (a transformers checkpoint with the weights folded in)")
    load_peft(loaded.model, run_dir)
    with _staged_folder(out, force) as folder:
        if fmt == "peft":
            export_hf_peft(loaded.model, folder, base_model_name_or_path=_reference(base), architecture=architecture)
        else:
            export_hf_checkpoint(loaded.model, folder, architecture, loaded.tokenizer, loaded.preprocess,
                                 processor_from=loaded.source if loaded.kind == "transformers" else None,
                                 source=str(base))
        files = sorted(p.name for p in folder.iterdir())
    return {"format": fmt, "method": record.method, "architecture": architecture, "base": str(base),
            "out": str(out), "files": files}


def _reference(base: str | Path) -> str:
    """How an adapter names its base: a local folder by its absolute path, a hub id as given."""
    folder = Path(base).expanduser()
    return str(folder.resolve()) if folder.exists() else str(base)


def _check_out(out: Path, force: bool, run_dir: Path, base_folder: Path | None) -> None:
    """Before any work: `out` can be written, holds nothing (unless `force`), and is neither the run
    folder, the base checkpoint's folder, nor a folder holding either (replacing it would delete them)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: --out is a file, not a folder")
    target = out.expanduser().resolve()
    for what, folder in (("the run folder", run_dir), ("the base checkpoint's folder", base_folder)):
        if folder is not None and (target == folder.resolve() or target in folder.resolve().parents):
            raise UserError(f"{out}: is {what} or holds it ({folder}); export to another folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"{out}: not empty (use --force to replace it)")
    check_writable(out, "export folder")


@contextlib.contextmanager
def _staged_folder(out: Path, force: bool) -> Iterator[Path]:
    """A new empty folder beside `out` to write into. When the block succeeds it is renamed onto `out`
    (an existing `out`, empty or replaced with `force`, is moved aside first and removed after); when
    it fails it is removed, with any parent folder made for it, and `out` is left as it was."""
    made = []  # parent folders this call creates, deepest first
    parent = out.parent
    while not parent.exists():
        made.append(parent)
        parent = parent.parent
    staging = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        yield staging
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(staging, 0o777 & ~mask)  # mkdtemp makes 0700; the result gets the usual permissions
        old = None
        if out.exists():
            if any(out.iterdir()) and not force:  # filled while we wrote
                raise UserError(f"{out}: not empty (use --force to replace it)")
            old = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.old")
            os.replace(out, old)
        os.replace(staging, out)
        staging = None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        code = disk_error(e)
        if code is None:
            raise
        raise UserError(f"{out}: cannot write ({os.strerror(code)}); nothing was written") from e
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
            for folder in made:  # deepest first
                with contextlib.suppress(OSError):
                    folder.rmdir()


__all__ = ["export_run"]
