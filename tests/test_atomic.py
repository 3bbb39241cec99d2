"""Atomic writes survive a writer killed at any point: the target is the old version or the new
one, whole (for a directory: once `recover_directory` / `latest_checkpoint` has put an aside
copy back), and the next write succeeds and leaves nothing behind.

Each writer runs in a forked child whose `os.replace` / `os.fsync` / `shutil.rmtree` /
`os.unlink` (and the writer's own `halfway` hook) end the process with `os._exit` at one kill
point, before or after the call runs; the exit code says the point was reached.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from tina.core.atomic import (
    ASIDE_SUFFIX,
    atomic_directory,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    recover_directory,
)
from tina.core.introspection import attach_introspection
from tina.data.contract import read_contract_jsonl, write_contract_jsonl
from tina.recipe import ship
from tina.train.bootstrap import save_model_dir
from tina.train.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="fork and /proc/self/fd (to name fsynced files)"
)

KILLED = 17  #: the exit code of a child killed at its kill point
FORK = multiprocessing.get_context("fork")


# --- kill points --------------------------------------------------------------------------------


def _aside(target: Path) -> Path:
    return target.with_name(target.name + ASIDE_SUFFIX)


def _is_temp(path: Path, target: Path) -> bool:
    """`path` is the temp file or directory of a write of `target`."""
    name = path.name
    return (
        path.parent == target.parent
        and name.startswith(f".{target.name}.")
        and name.endswith(".tmp")
    )


def _in_temp(path: Path, target: Path) -> bool:
    return any(_is_temp(p, target) for p in path.parents)


@dataclass(frozen=True)
class KillPoint:
    """Where a child dies: at the first call of `call` for which `matches(target, arg)` holds,
    before or after it runs; `expected` is what a reader then finds: "old" or "new"."""

    id: str
    call: str  #: replace (arg: (src, dst)), fsync (arg: its path), rmtree, unlink, halfway
    when: str  #: "before" or "after"
    matches: Callable[[Path, Any], bool]  #: (target, arg) → is this the call
    expected: str  #: "old" or "new"


NO_KILL = KillPoint("no-kill", "", "after", lambda t, a: False, "new")

FILE_POINTS = [
    KillPoint("while-writing", "halfway", "before", lambda t, a: True, "old"),
    KillPoint("before-fsync", "fsync", "before", lambda t, p: _is_temp(p, t), "old"),
    KillPoint("after-fsync", "fsync", "after", lambda t, p: _is_temp(p, t), "old"),
    KillPoint("before-rename", "replace", "before", lambda t, a: a[1] == t, "old"),
    KillPoint("after-rename", "replace", "after", lambda t, a: a[1] == t, "new"),
    KillPoint("after-directory-fsync", "fsync", "after", lambda t, p: p == t.parent, "new"),
    NO_KILL,
]

DIRECTORY_POINTS = [
    KillPoint("while-filling", "halfway", "before", lambda t, a: True, "old"),
    KillPoint("before-fsync-of-new-files", "fsync", "before", lambda t, p: _in_temp(p, t), "old"),
    KillPoint(
        "before-fsync-of-new-directory", "fsync", "before", lambda t, p: _is_temp(p, t), "old"
    ),
    KillPoint("before-aside-rename", "replace", "before", lambda t, a: a[0] == t, "old"),
    KillPoint("between-the-renames", "replace", "after", lambda t, a: a[0] == t, "old"),
    KillPoint("after-rename-in", "replace", "after", lambda t, a: a[1] == t, "new"),
    KillPoint("after-parent-fsync", "fsync", "after", lambda t, p: p == t.parent, "new"),
    KillPoint("before-old-removed", "rmtree", "before", lambda t, p: p == _aside(t), "new"),
    KillPoint("while-removing-old", "unlink", "after", lambda t, a: True, "new"),
    NO_KILL,
]


def _arm(point: KillPoint, target: Path) -> Callable[[], None]:
    """In the child: make `point` end the process; returns the writer's `halfway` hook."""
    removing_old = False

    def hook(call: str, real: Callable[..., Any], arg_of: Callable[..., Any]) -> Callable[..., Any]:
        def patched(*args: Any, **kwargs: Any) -> Any:
            nonlocal removing_old
            hit = call == point.call and point.matches(target, arg_of(*args, **kwargs))
            if call == "unlink":  # only the files of the old version, while it is removed
                hit = hit and removing_old
            if hit and point.when == "before":
                os._exit(KILLED)
            if call == "rmtree" and Path(args[0]) == _aside(target):
                removing_old = True
            result = real(*args, **kwargs)
            if hit:
                os._exit(KILLED)
            return result

        return patched

    os.replace = hook("replace", os.replace, lambda src, dst, **k: (Path(src), Path(dst)))
    os.fsync = hook("fsync", os.fsync, lambda fd: Path(os.readlink(f"/proc/self/fd/{fd}")))
    shutil.rmtree = hook("rmtree", shutil.rmtree, lambda path, *a, **k: Path(path))
    os.unlink = hook("unlink", os.unlink, lambda path, *a, **k: path)

    def halfway() -> None:
        if point.call == "halfway":
            os._exit(KILLED)

    return halfway


def _run_killed(point: KillPoint, target: Path, write: Callable[[Callable[[], None]], Any]) -> None:
    """`write(halfway)` in a forked child armed with `point`; asserts the point was reached."""

    def child() -> None:
        write(_arm(point, target))
        os._exit(0)

    process = FORK.Process(target=child)
    process.start()
    process.join(timeout=120)
    assert process.exitcode == (0 if point is NO_KILL else KILLED), (
        f"the child ended with {process.exitcode}: kill point {point.id!r} was not reached"
    )


def _leftovers(directory: Path) -> list[str]:
    return sorted(
        p.name
        for p in directory.iterdir()
        if p.name.endswith(ASIDE_SUFFIX) or (p.name.startswith(".") and p.name.endswith(".tmp"))
    )


# --- files --------------------------------------------------------------------------------------


def _records(version: str, n: int, halfway: Callable[[], None]):
    for i in range(n):
        if i == n // 2:
            halfway()
        yield {"text": f"{version} {i}\n<think>{i}+0=0 r{i};</think><answer>{i}</answer>"}


def _write_contract(path: Path, version: str, halfway: Callable[[], None] = lambda: None) -> None:
    write_contract_jsonl(path, _records(version, 4 if version == "old" else 7, halfway))


def _write_in_halves(path: Path, version: str, halfway: Callable[[], None] = lambda: None) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(f"{version}: first half\n")
            handle.flush()
            halfway()
            handle.write(f"{version}: second half\n")

    atomic_write(path, write)


FILE_WRITERS = {"atomic_write": _write_in_halves, "write_contract_jsonl": _write_contract}


@pytest.mark.parametrize("has_old", [True, False], ids=["over-an-old-file", "fresh"])
@pytest.mark.parametrize("writer", list(FILE_WRITERS))
@pytest.mark.parametrize("point", FILE_POINTS, ids=[p.id for p in FILE_POINTS])
def test_a_killed_file_writer_leaves_the_old_or_the_new_file(tmp_path, point, writer, has_old):
    write = FILE_WRITERS[writer]
    target = (tmp_path / "out" / "data.jsonl").resolve()
    versions = {}
    for version in ("old", "new"):
        write(tmp_path / version, version)
        versions[version] = (tmp_path / version).read_bytes()
    if has_old:
        write(target, "old")

    _run_killed(point, target, lambda halfway: write(target, "new", halfway))

    if point.expected == "old" and not has_old:
        assert not target.exists()
    else:
        assert target.read_bytes() == versions[point.expected]
    if writer == "write_contract_jsonl" and target.exists():
        assert len(read_contract_jsonl(target).records) == (4 if point.expected == "old" else 7)
    write(target, "new")  # the next write is unhindered by what the killed one left
    assert target.read_bytes() == versions["new"]


def test_files_get_the_usual_modes_and_text_keeps_its_newlines(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    text = atomic_write_text(tmp_path / "a.csv", "a,b\r\n1,2\r\n")
    assert text.read_bytes() == b"a,b\r\n1,2\r\n"
    assert text.stat().st_mode & 0o777 == 0o666 & ~umask
    value = atomic_write_json(tmp_path / "b.json", {"x": [1, None]})
    assert json.loads(value.read_text()) == {"x": [1, None]}
    with pytest.raises(ValueError, match="Out of range float"):
        atomic_write_json(tmp_path / "b.json", {"x": float("nan")})
    assert json.loads(value.read_text()) == {"x": [1, None]}  # the failed write changed nothing
    with atomic_directory(tmp_path / "d") as tmp:
        (tmp / "f").write_text("f")
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o777 & ~umask
    assert _leftovers(tmp_path) == []


def test_a_writer_error_keeps_the_old_version_and_no_temp(tmp_path):
    atomic_write_text(tmp_path / "f.txt", "old")
    with pytest.raises(ZeroDivisionError):
        atomic_write(tmp_path / "f.txt", lambda tmp: (Path(tmp).write_text("half"), 1 / 0))
    with pytest.raises(ValueError, match=r"record 1: "):
        write_contract_jsonl(tmp_path / "f.txt", [*_records("x", 1, lambda: None), {"text": 3}])
    assert (tmp_path / "f.txt").read_text() == "old"
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("old")
    with pytest.raises(KeyError), atomic_directory(tmp_path / "d") as tmp:
        (tmp / "f").write_text("new")
        raise KeyError("the writer failed")
    assert (tmp_path / "d" / "f").read_text() == "old"
    assert _leftovers(tmp_path) == []


# --- directories --------------------------------------------------------------------------------


def _snapshot(directory: Path) -> dict[str, bytes]:
    """Every file of `directory` (relative path → bytes)."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _reinit(module: torch.nn.Module, seed: int) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(std=0.02)


SEEDS = {"old": 1, "new": 2}
STEP, MODE = 7, "supervised"


@dataclass
class DirectoryWriter:
    """`write(target, version, halfway)` writes a version of a directory; `find(target)` is
    how a reader finds it after a crash."""

    write: Callable[[Path, str, Callable[[], None]], None]
    target: Callable[[Path], Path]  #: where the directory goes under a test's root
    find: Callable[[Path], Path | None]


def _files_writer() -> DirectoryWriter:
    def write(target: Path, version: str, halfway: Callable[[], None]) -> None:
        with atomic_directory(target) as tmp:
            (tmp / "a.txt").write_text(f"{version} a")
            halfway()
            (tmp / "sub").mkdir()
            (tmp / "sub" / "b.txt").write_text(f"{version} b" * (3 if version == "new" else 1))
            if version == "old":
                (tmp / "only-old.txt").write_text("gone in the new version")

    return DirectoryWriter(write, lambda root: root / "dir", _recovered)


def _recovered(target: Path) -> Path | None:
    recover_directory(target)
    return target if target.exists() else None


def _checkpoint_writer(model: Any) -> DirectoryWriter:
    intro = attach_introspection(model)

    def write(target: Path, version: str, halfway: Callable[[], None]) -> None:
        _reinit(intro, SEEDS[version])
        real_save = torch.save

        def save_after_halfway(*args: Any, **kwargs: Any) -> None:
            halfway()  # the parts are written, the trainer state not yet
            real_save(*args, **kwargs)

        torch.save = save_after_halfway
        try:
            save_checkpoint(target.parent, STEP, intro, {"version": version}, MODE)
        finally:
            torch.save = real_save

    return DirectoryWriter(
        write,
        lambda root: root / "run" / f"checkpoint-{STEP}",
        lambda t: latest_checkpoint(t.parent),
    )


def _ship_writer(root: Path) -> DirectoryWriter:
    for version in SEEDS:
        final = root / f"final-{version}"
        (final / "nested").mkdir(parents=True)
        (final / "introspection.safetensors").write_bytes(version.encode() * 100)
        (final / "nested" / "calibration.json").write_text(json.dumps({"v": version}))

    def write(target: Path, version: str, halfway: Callable[[], None]) -> None:
        real_copytree = shutil.copytree
        copied = 0

        def copy_then_halfway(src: str, dst: str) -> Any:
            nonlocal copied
            if copied == 1:
                halfway()  # one file copied, the others not yet
            copied += 1
            return shutil.copy2(src, dst)

        def copytree(src: Any, dst: Any, *args: Any, **kwargs: Any) -> Any:
            if not args:  # ship's call; copytree's own recursion passes its copy_function on
                kwargs["copy_function"] = copy_then_halfway
            return real_copytree(src, dst, *args, **kwargs)

        shutil.copytree = copytree
        try:
            ship(root / f"final-{version}", target)
        finally:
            shutil.copytree = real_copytree

    return DirectoryWriter(write, lambda root: root / "embedded" / "introspection", _recovered)


def _model_dir_writer(model: Any, tokenizer: Any) -> DirectoryWriter:
    def write(target: Path, version: str, halfway: Callable[[], None]) -> None:
        _reinit(model, SEEDS[version])
        real_save = tokenizer.save_pretrained

        def save_after_halfway(*args: Any, **kwargs: Any) -> Any:
            halfway()  # the weights are written, the tokenizer not yet
            return real_save(*args, **kwargs)

        tokenizer.save_pretrained = save_after_halfway
        try:
            save_model_dir(model, tokenizer, target, {"bootstrap_config.json": {"v": version}})
        finally:
            del tokenizer.save_pretrained

    return DirectoryWriter(write, lambda root: root / "model", _recovered)


DIRECTORY_WRITERS = ["atomic_directory", "save_checkpoint", "ship", "save_model_dir"]


@pytest.fixture
def directory_writer(request, tmp_path, tiny_fresh) -> DirectoryWriter:
    model, tokenizer = tiny_fresh
    return {
        "atomic_directory": _files_writer,
        "save_checkpoint": lambda: _checkpoint_writer(model),
        "ship": lambda: _ship_writer(tmp_path / "sources"),
        "save_model_dir": lambda: _model_dir_writer(model, tokenizer),
    }[request.param]()


@pytest.mark.parametrize("directory_writer", DIRECTORY_WRITERS, indirect=True)
@pytest.mark.parametrize("point", DIRECTORY_POINTS, ids=[p.id for p in DIRECTORY_POINTS])
def test_a_killed_directory_writer_leaves_the_old_or_the_new_directory(
    tmp_path, point, directory_writer
):
    writer = directory_writer
    versions = {}
    for version in SEEDS:
        reference = writer.target(tmp_path / f"reference-{version}")
        writer.write(reference, version, lambda: None)
        versions[version] = _snapshot(reference)
    assert versions["old"] != versions["new"]
    target = writer.target(tmp_path / "root").resolve()
    writer.write(target, "old", lambda: None)

    _run_killed(point, target, lambda halfway: writer.write(target, "new", halfway))

    assert target.is_dir() or _aside(target).is_dir()  # never neither
    assert writer.find(target) == target  # a reader finds it (putting an aside copy back)
    assert _snapshot(target) == versions[point.expected]
    writer.write(target, "new", lambda: None)  # the next write recovers and succeeds
    assert _snapshot(target) == versions["new"]
    assert _leftovers(target.parent) == []


def test_a_checkpoint_cut_between_the_renames_is_resumed_from_its_old_version(tmp_path, tiny_fresh):
    """What the trainer sees after a crash mid-swap: `latest_checkpoint` puts the old version
    back and `load_checkpoint` reads it."""
    writer = _checkpoint_writer(tiny_fresh[0])
    target = (tmp_path / "run" / f"checkpoint-{STEP}").resolve()
    writer.write(target, "old", lambda: None)
    point = next(p for p in DIRECTORY_POINTS if p.id == "between-the-renames")
    _run_killed(point, target, lambda halfway: writer.write(target, "new", halfway))
    assert not target.exists() and _aside(target).is_dir()
    assert latest_checkpoint(target.parent) == target
    assert load_checkpoint(target, MODE)["version"] == "old"
    assert _leftovers(target.parent) == []
