"""Atomic file writes: every result file is written to a temporary name in the same folder,
flushed and fsync'ed, then renamed over the target, so a reader never sees half a file."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

# Errors of the file system rather than of the program: reported as one line naming the file.
_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM)


def disk_error(e: BaseException) -> int | None:
    """The errno of a file-system failure (disk full, read-only, forbidden) behind `e`, also when a
    library reports it as its own exception type (safetensors: "IoError(Os { code: 28, ... })"); else None."""
    if isinstance(e, OSError):
        return e.errno if e.errno in _DISK_ERRORS else None
    text = str(e)
    found = re.search(r"\b(?:code: |os error )(\d+)", text)
    if found and int(found.group(1)) in _DISK_ERRORS:
        return int(found.group(1))
    return next((code for code in _DISK_ERRORS if os.strerror(code) in text), None)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`, on error removed
    (an existing `path` is then left as it was). A full disk, a read-only or forbidden folder is a
    one-line UserError naming `path`."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        yield tmp
        mask = os.umask(0)
        os.umask(mask)
        # After the writer: mkstemp makes 0600, and some writers (safetensors) create the file anew,
        # 0600 again. The result gets the usual permissions.
        os.chmod(tmp, 0o666 & ~mask)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as e:
        code = disk_error(e)
        if code is not None:
            from vlpeft.errors import DiskError

            raise DiskError(f"{path}: cannot write ({os.strerror(code)}); no file was changed") from e
        raise
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def hash_file(h, path: str | os.PathLike) -> None:
    """Feed a file's bytes into the hashlib object `h`, 4 MB at a time (weights and datasets are large)."""
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_if_changed(path: str | os.PathLike, data: str | bytes) -> bool:
    """Write text or bytes atomically unless the file already holds exactly that; True if written.
    (Reruns that produce the same exports leave the files, and their times, untouched.)"""
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if path.is_file() and path.read_bytes() == raw:
        return False
    with atomic_path(path) as tmp:
        tmp.write_bytes(raw)
    return True


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_utf8(path: str | os.PathLike, what: str = "file") -> str:
    """A text file's content; one line naming the file when it cannot be read or is not UTF-8 (a
    UTF-16 file, as some Windows editors save, is named as such)."""
    from vlpeft.errors import UserError

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read {what} ({e.strerror or e.__class__.__name__})") from e
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
            raise UserError(f"{path}: {what} is UTF-16 text; save it as UTF-8") from None
        raise UserError(f"{path}: {what} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Read JSON, turning every failure into a one-line UserError naming the file."""
    from vlpeft.errors import UserError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found")
    text = read_utf8(path, what)
    if not text.strip():
        raise UserError(f"{path}: {what} is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: {what} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from e


def expand_path(value: str, where: str, base: str | os.PathLike | None = None) -> str:
    """A path as a user wrote it: $VARIABLES and ~ expanded (an unset variable is a UserError naming
    `where`), and a relative path taken relative to `base` when given."""
    import re

    from vlpeft.errors import UserError

    if not isinstance(value, str) or not value:
        raise UserError(f"{where} must be a path, got {value!r}")
    for var in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", value):
        if var not in os.environ:
            raise UserError(f"{where}: environment variable {var} is not set (it names your data: {value})")
    path = os.path.expanduser(os.path.expandvars(value))
    if base is not None and not os.path.isabs(path):
        path = os.path.join(base, path)
    return path


def read_yaml(path: str | os.PathLike, what: str = "YAML file") -> Any:
    """Parse a YAML file (safe loader), turning every failure into a one-line UserError naming the
    file and, for a syntax error, the line and column. A key given twice in one mapping is refused
    with both line numbers (plain YAML keeps the last one silently)."""
    import yaml

    from vlpeft.errors import UserError

    path = Path(path)
    text = read_utf8(path, what)
    try:
        data = yaml.load(text, Loader=_unique_key_loader())
        if _expanded_size(data, YAML_MAX_VALUES) > YAML_MAX_VALUES:
            raise UserError(f"{path}: its aliases expand to more than {YAML_MAX_VALUES:,} values; "
                            "write the values out (a config needs far fewer)")
        return data
    except _DuplicateKey as e:
        raise UserError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"{path}: invalid YAML{where} ({getattr(e, 'problem', None) or e.__class__.__name__})") from e


YAML_MAX_VALUES = 100_000  # values of a YAML file once its aliases are expanded (`a: &x [..]`, `b: *x`)


def _expanded_size(data: Any, limit: int) -> int:
    """How many values `data` holds with every alias expanded, counted up to just past `limit`
    (a few aliases of aliases stand for billions: the count stops, it never expands them)."""
    count, stack = 0, [data]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return count


class _DuplicateKey(Exception):
    pass


def _unique_key_loader():
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise _DuplicateKey(f"key {key!r} is given twice (lines {seen[key]} and {line}); keep one")
                seen[key] = line
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def check_writable(path: str | os.PathLike, what: str = "output folder") -> None:
    """Before any work: `path` (a folder, existing or to be made) can be written. A path under a
    file, a file where a folder is wanted, or a read-only or forbidden place is a one-line UserError
    naming `path`. Nothing is left behind (the probe file is removed; no folder is made)."""
    from vlpeft.errors import UserError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: {what} is a file, not a folder")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{path}: cannot make the {what}: {probe} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=probe, prefix=".vlpeft-write-check."):
            pass
    except OSError as e:
        raise UserError(f"{path}: cannot write the {what} ({probe}: {e.strerror or e})") from e
