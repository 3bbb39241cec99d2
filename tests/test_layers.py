"""The layering rule of `DESIGN.md`, read from every module's imports with `ast`.

Layers, lowest first: `core`; `data`; `engine`; then `eval` < `train` < `selfplay`, with `serve`
beside them on the engine; the commands (modules directly in `tina/`) on top. A module may import
its own package and the packages below it, never one above, and no two modules may import each
other, directly or through others (function-level imports count too).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "tina"

#: each package and the packages it may import besides itself; `None` is the commands layer
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "data": {"core"},
    "engine": {"core", "data"},
    "eval": {"core", "data", "engine"},
    "train": {"core", "data", "engine", "eval"},
    "selfplay": {"core", "data", "engine", "eval", "train"},
    "serve": {"core", "data", "engine"},
}
COMMANDS = "(commands)"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(module: str) -> str:
    """`tina.core.tags` → `core`; a module directly in `tina/` (or `tina` itself) → commands."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ALLOWED) else COMMANDS


def imports_of(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, module) of every `tina` import in `path`, resolved to a module of the tree (a
    `from tina.x import name` that names a submodule counts as that submodule)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = module_name(path, root).split(".")
    if path.name != "__init__.py":
        here = here[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "tina"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here[: len(here) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] != "tina":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((node.lineno, sub if _exists(sub, root) else base))
    found = sorted(set(found))
    return found


def _exists(module: str, root: Path) -> bool:
    rel = Path(*module.split(".")[1:])
    return (root / rel).with_suffix(".py").is_file() or (root / rel / "__init__.py").is_file()


def graph(root: Path) -> dict[str, list[tuple[int, str]]]:
    return {module_name(p, root): imports_of(p, root) for p in sorted(root.rglob("*.py"))}


def layer_problems(root: Path) -> list[str]:
    """`file:line imports module (layer → layer)` for every import against the order (a
    package the table does not know may import nothing of Tina's outside itself)."""
    problems = []
    for module, deps in graph(root).items():
        layer = package_of(module)
        if layer == COMMANDS:
            continue
        for line, dep in deps:
            target = package_of(dep)
            if target == layer or target in ALLOWED.get(layer, set()):
                continue
            file = root.parent / (module.replace(".", "/") + ".py")
            if not file.is_file():
                file = root.parent / module.replace(".", "/") / "__init__.py"
            problems.append(
                f"{file.relative_to(root.parent)}:{line} imports {dep} ({layer} → {target})"
            )
    return problems


def cycles(root: Path) -> list[list[str]]:
    """Every import cycle between modules (one per strongly connected component)."""
    edges = {m: sorted({d for _, d in deps if d != m}) for m, deps in graph(root).items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, []):
            if w not in edges:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_import_follows_the_layer_order() -> None:
    problems = layer_problems(ROOT)
    assert not problems, "imports against the layer order:\n" + "\n".join(problems)


def test_no_import_cycles_between_modules() -> None:
    found = cycles(ROOT)
    assert not found, "import cycles:\n" + "\n".join(" ↔ ".join(c) for c in found)


def test_every_package_is_a_known_layer() -> None:
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(ALLOWED), "a package the layer table does not know"


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "tina"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in ALLOWED:
        (root / package).mkdir(exist_ok=True)
        (root / package / "__init__.py").touch()
    return root


def test_a_planted_upward_import_is_named(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "core/tags.py": "def f():\n    from tina.engine.loop import Engine\n",
            "engine/loop.py": "from tina.core import tags\n",
        },
    )
    assert layer_problems(root) == ["tina/core/tags.py:2 imports tina.engine.loop (core → engine)"]


@pytest.mark.parametrize(
    "files",
    [
        {"train/a.py": "import tina.train.b\n", "train/b.py": "from tina.train import a\n"},
        {
            "eval/a.py": "from tina.eval.b import x\n",
            "eval/b.py": "from tina.eval.c import y\n",
            "eval/c.py": "def g():\n    from . import a\n",
        },
    ],
    ids=["two-modules", "three-modules-relative"],
)
def test_a_planted_cycle_is_found(tmp_path: Path, files: dict[str, str]) -> None:
    root = _tree(tmp_path, files)
    assert layer_problems(root) == []
    assert cycles(root) == [sorted(f"tina.{n[:-3].replace('/', '.')}" for n in files)]
