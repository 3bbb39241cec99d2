"""`tina validate`: check configs, tokenizer tags and adapters together; report every problem.

What it does: `validate_paths(paths, base=None)` looks at each path — a model directory, a PEFT
adapter directory (its base from `base`, `--base DIR`; without one the checks that need a base
are skipped), a known config file, or a service config — and returns every `Problem` (file,
field, message) found, never stopping at the first. Checks: strict JSON and the schemas in
`tina/schemas/`; every reasoning tag and stop sequence one token id; `config.json` ↔
`generation_config.json` id coherence; an adapter's `target_modules` in the base (built on the
meta device: no weights); stop/slack parity across service configs; introspection layers and
taps within the base's layer count. Each check in detail: docs/configuration.md.

What it does not do: load weights, run the model, or fix anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tina.core.checks import FILE_FIELD, ConfigError, Problem, read_json_file, schema_problems
from tina.serve.service_config import (
    ADAPTER_CONFIG_SCHEMA,
    GENERATION_CONFIG_SCHEMA,
    INTROSPECTION_CONFIG_SCHEMA,
    ServiceConfig,
    shipped_service_config_path,
)

__all__ = [
    "ConfigError",
    "Problem",
    "ValidationReport",
    "default_paths",
    "run_validation",
    "validate_paths",
]

BASE_CONFIG_NAME = "config.json"
GENERATION_CONFIG_NAME = "generation_config.json"
ADAPTER_CONFIG_NAME = "adapter_config.json"
INTROSPECTION_CONFIG_NAME = "introspection_config.json"  # == tina.core.introspection.CONFIG_NAME

_KNOWN_FILES = (
    BASE_CONFIG_NAME,
    GENERATION_CONFIG_NAME,
    ADAPTER_CONFIG_NAME,
    INTROSPECTION_CONFIG_NAME,
)


@dataclass
class ValidationReport:
    """What a validation run found: every problem, and every file it read."""

    problems: list[Problem] = field(default_factory=list)  #: in the order found
    files_checked: list[str] = field(default_factory=list)  #: each file once, in order read

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class _Base:
    """A base model as far as the checks need it (built lazily, once per directory)."""

    directory: Path
    raw: dict[str, Any]  #: config.json as parsed
    config: Any = None  #: transformers config, None when it could not be built
    n_layers: int | None = None
    _module_names: list[str] | None = None

    def module_names(self) -> list[str]:
        """Every submodule name of the model built from the config on the meta device."""
        if self._module_names is None:
            import torch
            from transformers import AutoModelForCausalLM

            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(self.config)
            self._module_names = [name for name, _ in model.named_modules() if name]
        return self._module_names


def default_paths() -> list[Path]:
    """What `tina validate` checks when given no path: the shipped service config and the
    embedded model directory."""
    from tina.core.models import embedded_model_dir

    return [shipped_service_config_path(), embedded_model_dir()]


def _ids(value: Any) -> list[int] | None:
    """Token id(s) as a list (None when unset or not ids at all)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return [value]
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return list(value)
    return None


class _Run:
    def __init__(self, base: str | Path | None) -> None:
        self.report = ValidationReport()
        self.base_dir = Path(base) if base is not None else None
        self._bases: dict[Path, _Base | None] = {}
        self.services: list[tuple[str, ServiceConfig]] = []
        self.tokenizers: list[tuple[str, Any]] = []
        self.stop_strings: list[tuple[str, list[str]]] = []

    # --- helpers ---------------------------------------------------------------------------

    def problem(self, file: str | Path, field_name: str, message: str) -> None:
        self.report.problems.append(Problem(str(file), field_name, message))

    def read(self, path: Path) -> Any:
        """Parsed JSON of `path`, or None after recording why it could not be read."""
        if str(path) not in self.report.files_checked:
            self.report.files_checked.append(str(path))
        value, problem = read_json_file(path)
        if problem is not None:
            self.report.problems.append(problem)
            return None
        return value

    def read_checked(self, path: Path, schema: str) -> Any:
        """Parsed JSON of `path` when it satisfies `schema`, else None (problems recorded)."""
        value = self.read(path)
        if value is None:
            return None
        problems = schema_problems(str(path), value, schema)
        self.report.problems.extend(problems)
        return None if problems else value

    def load_base(self, directory: Path) -> _Base | None:
        """The base model of `directory` (config.json), or None after recording why not."""
        directory = directory.resolve()
        if directory in self._bases:
            return self._bases[directory]
        path = directory / BASE_CONFIG_NAME
        base: _Base | None = None
        if not path.is_file():
            self.problem(directory, BASE_CONFIG_NAME, "not a model directory (no config.json)")
        else:
            raw = self.read(path)
            if raw is not None and not isinstance(raw, dict):
                self.problem(path, "(root)", "expected a JSON object")
            elif raw is not None:
                base = _Base(directory, raw)
                try:
                    from transformers import AutoConfig

                    base.config = AutoConfig.from_pretrained(directory, local_files_only=True)
                    text_config = base.config.get_text_config()
                    n_layers = getattr(text_config, "num_hidden_layers", None)
                    base.n_layers = n_layers if isinstance(n_layers, int) else None
                except Exception as exc:  # transformers raises many kinds here
                    self.problem(path, "(file)", f"not a loadable model config: {exc}")
        self._bases[directory] = base
        return base

    # --- per path --------------------------------------------------------------------------

    def check_path(self, path: Path) -> None:
        if path.is_dir():
            is_model = (path / BASE_CONFIG_NAME).is_file()
            is_adapter = (path / ADAPTER_CONFIG_NAME).is_file()
            if is_model:
                self.check_model_dir(path)
            if is_adapter:
                self.check_adapter_dir(path, skip_introspection=is_model)
            if not (is_model or is_adapter):
                if (path / INTROSPECTION_CONFIG_NAME).is_file():
                    self.check_introspection(path / INTROSPECTION_CONFIG_NAME, self.given_base())
                else:
                    self.problem(
                        path,
                        FILE_FIELD,
                        "not a model directory (config.json) nor an adapter directory "
                        "(adapter_config.json)",
                    )
        elif path.is_file():
            name = path.name
            if name == BASE_CONFIG_NAME:
                self.check_model_dir(path.parent)
            elif name == ADAPTER_CONFIG_NAME:
                self.check_adapter_dir(path.parent, skip_introspection=True)
            elif name == GENERATION_CONFIG_NAME:
                self.check_generation(path, None)
            elif name == INTROSPECTION_CONFIG_NAME:
                self.check_introspection(path, self.given_base())
            else:
                self.check_service_config(path)
        else:
            self.problem(path, FILE_FIELD, "no such file or directory")

    def given_base(self) -> _Base | None:
        return self.load_base(self.base_dir) if self.base_dir is not None else None

    def check_service_config(self, path: Path) -> None:
        payload = self.read(path)
        if payload is None:
            return
        try:
            config = ServiceConfig.from_dict(payload, file=str(path))
        except ConfigError as exc:
            self.report.problems.extend(exc.problems)
            return
        self.services.append((str(path), config))

    def check_model_dir(self, directory: Path) -> None:
        base = self.load_base(directory)
        generation = directory / GENERATION_CONFIG_NAME
        if generation.is_file():
            self.check_generation(generation, base)
        if (directory / INTROSPECTION_CONFIG_NAME).is_file():
            self.check_introspection(directory / INTROSPECTION_CONFIG_NAME, base)
        if base is not None:  # the tokenizer loader reads config.json too: no echo of its problem
            self.check_tokenizer(directory)

    def check_tokenizer(self, directory: Path) -> None:
        from tina.core.tags import tag_ids

        where = directory / "tokenizer.json"
        file = where if where.is_file() else directory
        try:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        except Exception as exc:  # missing files, bad JSON, unknown class: all one problem
            self.problem(file, "tokenizer", f"cannot load the tokenizer: {exc}")
            return
        for name in ("tokenizer.json", "tokenizer_config.json"):
            if (directory / name).is_file() and str(
                directory / name
            ) not in self.report.files_checked:
                self.report.files_checked.append(str(directory / name))
        try:
            tag_ids(tokenizer)
        except ValueError as exc:
            self.problem(file, "reasoning_tags", str(exc))
        self.tokenizers.append((str(file), tokenizer))

    def check_generation(self, path: Path, base: _Base | None) -> None:
        generation = self.read_checked(path, GENERATION_CONFIG_SCHEMA)
        if generation is None:
            return
        stops = generation.get("stop_strings")
        if stops is not None:
            self.stop_strings.append(
                (str(path), [stops] if isinstance(stops, str) else list(stops))
            )
        if base is None:
            return
        for key in ("bos_token_id", "pad_token_id"):
            ours, theirs = _ids(generation.get(key)), _ids(base.raw.get(key))
            if ours is not None and theirs is not None and ours != theirs:
                self.problem(
                    path,
                    key,
                    f"{generation[key]} differs from {key} {base.raw[key]} in "
                    f"{base.directory / BASE_CONFIG_NAME}",
                )
        ours, theirs = _ids(generation.get("eos_token_id")), _ids(base.raw.get("eos_token_id"))
        if ours is not None and theirs is not None:
            missing = [i for i in theirs if i not in ours]
            if missing:
                self.problem(
                    path,
                    "eos_token_id",
                    f"{generation['eos_token_id']} does not hold eos_token_id "
                    f"{base.raw['eos_token_id']} of {base.directory / BASE_CONFIG_NAME}",
                )

    def check_adapter_dir(self, directory: Path, skip_introspection: bool = False) -> None:
        path = directory / ADAPTER_CONFIG_NAME
        adapter = self.read_checked(path, ADAPTER_CONFIG_SCHEMA)
        base = self.given_base()
        if adapter is not None and base is not None and base.config is not None:
            self.check_targets(path, adapter.get("target_modules"), base)
        if not skip_introspection and (directory / INTROSPECTION_CONFIG_NAME).is_file():
            self.check_introspection(directory / INTROSPECTION_CONFIG_NAME, base)

    def check_targets(self, path: Path, targets: Any, base: _Base) -> None:
        try:
            names = base.module_names()
        except Exception as exc:  # an architecture transformers cannot build
            self.problem(path, "target_modules", f"cannot build the base {base.directory}: {exc}")
            return
        where = base.directory / BASE_CONFIG_NAME
        if isinstance(targets, str):
            if targets == "all-linear":
                return
            if not any(re.fullmatch(targets, name) for name in names):
                self.problem(path, "target_modules", f"{targets!r} matches no module of {where}")
        elif isinstance(targets, list):
            for i, target in enumerate(targets):
                if not any(name == target or name.endswith("." + target) for name in names):
                    self.problem(path, f"target_modules[{i}]", f"no module {target!r} in {where}")

    def check_introspection(self, path: Path, base: _Base | None) -> None:
        payload = self.read_checked(path, INTROSPECTION_CONFIG_SCHEMA)
        if payload is None:
            return
        from tina.core.introspection import IntrospectionConfig
        from tina.core.metacog_heads import resolve_taps

        try:
            config = IntrospectionConfig.from_dict(payload)
        except (TypeError, ValueError) as exc:
            self.problem(path, "(root)", str(exc))
            return
        if base is None or base.n_layers is None:
            return
        n = base.n_layers
        for name, layers in (
            ("adapter_layers", config.adapter_layers),
            ("heads.taps", config.heads.taps),
        ):
            for i, layer in enumerate(layers):
                try:
                    resolve_taps([layer], n)
                except ValueError as exc:
                    self.problem(
                        path, f"{name}[{i}]", f"{exc} (base {base.directory} has {n} layers)"
                    )

    # --- across files ----------------------------------------------------------------------

    def check_across(self) -> None:
        if self.services:
            first_file, first = self.services[0]
            for file, config in self.services[1:]:
                for key in ("slack_ratio", "stop_sequences"):
                    ours, theirs = getattr(config, key), getattr(first, key)
                    if ours != theirs:
                        self.problem(file, key, f"{ours!r} differs from {theirs!r} in {first_file}")
            for file, stops in self.stop_strings:
                if stops != first.stop_sequences:
                    self.problem(
                        file,
                        "stop_strings",
                        f"{stops!r} differs from stop_sequences {first.stop_sequences!r} "
                        f"in {first_file}",
                    )
        stops_seen: list[str] = []
        for _, config in self.services:
            stops_seen += [s for s in config.stop_sequences if s not in stops_seen]
        for file, tokenizer in self.tokenizers:
            for stop in stops_seen:
                ids = list(tokenizer.encode(stop, add_special_tokens=False))
                if len(ids) != 1:
                    self.problem(
                        file,
                        "stop_sequences",
                        f"stop sequence {stop!r} encodes to {len(ids)} ids {ids}, expected 1",
                    )


def run_validation(paths: Iterable[str | Path], base: str | Path | None = None) -> ValidationReport:
    """Check every path (see module docstring); returns every problem and the files read."""
    run = _Run(base)
    for path in paths:
        run.check_path(Path(path))
    run.check_across()
    return run.report


def validate_paths(paths: Sequence[str | Path], base: str | Path | None = None) -> list[Problem]:
    """Every problem found in `paths` (empty when all is well); see module docstring."""
    return run_validation(paths, base).problems
