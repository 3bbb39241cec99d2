"""Atomic file writes: a temp file beside the target, then one rename.

`atomic_write(path, write)` makes the parent directory, calls `write(tmp)` with a fresh temp
path in the same directory, and renames it onto `path`; on any error the temp file goes and
`path` keeps its old content. What it does not do: fsync, or directories (checkpoints and the
recipe's `ship` rename whole directories themselves), or streaming JSONL
(`tina.contract.write_contract_jsonl` keeps its own loop, which counts and checks records).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], object]) -> Path:
    """Write `path` through `write(tmp)` and a rename; returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
