"""Atomic writes of files and directories: a reader sees the old version or the new one, whole.

- `atomic_write(path, write)`: `write(tmp)` fills a fresh temp file beside `path`; the file is
  fsynced, renamed onto `path`, and the directory fsynced. `atomic_write_text` and
  `atomic_write_json` are the common cases.
- `atomic_directory(path)`: a context manager yielding a fresh temp directory beside `path`;
  on a clean exit its files are fsynced, the old `path` (if any) is renamed aside, the new one
  renamed in, and the old one removed. A crash at any point leaves `path` or its aside copy,
  never neither: `recover_directory(path)` (called on entry) puts an aside copy back when the
  crash fell between the two renames, and removes the temp directories of unfinished writes.

Temp files and directories get the usual modes (0o666 / 0o777 less the umask), not private ones.
On any error the temp file or directory goes and `path` keeps its old content. What it does not
do: check records (`tina.data.contract.write_contract_jsonl` checks each line, then calls
`atomic_write`), or lock against two concurrent writers of one path.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ASIDE_SUFFIX = ".old"  #: `<name>.old`: the previous version of a directory during a swap
TEMP_SUFFIX = ".tmp"  #: `.<name>.<random>.tmp`: a file or directory being written beside `<name>`
_TEMP_BYTES = 6  # random bytes in a temp name


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Persist renames in `directory` (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: str | os.PathLike[str]) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _temp_path(path: Path) -> Path:
    """A fresh name beside `path`: `.<name>.<random>.tmp` (hidden, so globs of `path`'s kind
    such as `checkpoint-*` never see it)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(_TEMP_BYTES)}{TEMP_SUFFIX}")


def _is_temp_of(candidate: Path, path: Path) -> bool:
    middle = candidate.name[len(path.name) + 2 : -len(TEMP_SUFFIX)]
    return len(middle) == 2 * _TEMP_BYTES and all(c in "0123456789abcdef" for c in middle)


def _new_temp_file(path: Path) -> Path:
    # created like any file (mode 0o666 less the umask), not private as `mkstemp` makes it
    while True:
        tmp = _temp_path(path)
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp


def _new_temp_directory(path: Path) -> Path:
    # created like any directory (mode 0o777 less the umask), not private as `mkdtemp` makes it
    while True:
        tmp = _temp_path(path)
        try:
            tmp.mkdir(0o777)
        except FileExistsError:
            continue
        return tmp


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], object]) -> Path:
    """Write `path` through `write(tmp)`, an fsync and a rename; returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(_new_temp_file(path))
    try:
        write(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """`text` (UTF-8, newlines as they are: CSV text keeps its own) to `path`, atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(text.encode("utf-8")))


def atomic_write_json(path: str | os.PathLike[str], value: Any, indent: int | None = 2) -> Path:
    """`value` as strict JSON (NaN is an error: make it `None` first) to `path`, atomically."""
    text = json.dumps(value, indent=indent, allow_nan=False) + "\n"
    return atomic_write_text(path, text)


def recover_directory(path: str | os.PathLike[str]) -> None:
    """Undo what a crash in `atomic_directory` left of `path`: an aside copy comes back when the
    crash fell between the two renames (is removed when the new version made it in), and the
    temp directories of unfinished writes go."""
    path = Path(path)
    aside = path.with_name(path.name + ASIDE_SUFFIX)
    if aside.is_dir():
        if path.exists():
            shutil.rmtree(aside)  # the new version made it in; the old one is garbage
        else:
            os.replace(aside, path)
            fsync_directory(path.parent)
    if path.parent.is_dir():
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*{TEMP_SUFFIX}"):
            if _is_temp_of(stale, path) and stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    for directory, _, files in os.walk(root):
        for name in files:
            _fsync_file(Path(directory) / name)
        fsync_directory(directory)


@contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp directory to fill; on a clean exit it replaces `path` as a whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(path)
    tmp = _new_temp_directory(path)
    try:
        yield tmp
        _fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    aside = path.with_name(path.name + ASIDE_SUFFIX)
    if path.exists():
        os.replace(path, aside)
    os.replace(tmp, path)
    fsync_directory(path.parent)
    shutil.rmtree(aside, ignore_errors=True)
