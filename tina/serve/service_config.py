"""The service configuration: one dataclass, one JSON file, one loader for serve, eval, training.

What it does: `ServiceConfig` (with nested `Limits`, `AuthConfig`, `ModelRef`): stop sequences,
default visibility of the chain of thought (hidden), think-budget slack, calibration file,
host/port, request limits, authentication and which model to load, each dataclass checking its
values in `__post_init__` (a `ConfigError` listing every bad field); the shipped default,
`tina/config/service_config.json` (`shipped_service_config_path`; the repository's `config/`
links to it); `load_service_config(path=None)`: strict JSON, validated against
`tina/schemas/service_config.schema.json` (unknown keys are errors), then the dataclass; any
failure is a `ConfigError` listing every problem as `file: field: message`.

What it does not do: the checks shared by every config file (`tina.core.checks`), cross-file
checks (tokenizer tags, id coherence, adapters: see `tina.validate`), nor read the API keys'
values at load time (`AuthConfig.api_keys()` reads the named environment variable when called).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from tina.core.checks import (
    ConfigError,
    Problem,
    bool_problem,
    int_problem,
    is_int,
    number_problem,
    raise_if,
    read_json_file,
    schema_problems,
    str_problem,
)
from tina.core.tags import STOP_SEQUENCES

SERVICE_CONFIG_NAME = "service_config.json"
SERVICE_CONFIG_SCHEMA = "service_config.schema.json"
GENERATION_CONFIG_SCHEMA = "generation_config.schema.json"
ADAPTER_CONFIG_SCHEMA = "adapter_config.schema.json"
INTROSPECTION_CONFIG_SCHEMA = "introspection_config.schema.json"


_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# --- the dataclasses ----------------------------------------------------------------------------


@dataclass
class Limits:
    """Request and batching limits of the service."""

    max_body_bytes: int = 1_048_576  #: largest request body accepted, in bytes
    max_prompt_chars: int = 8192  #: longest prompt accepted, in characters
    max_tokens: int = 512  #: most tokens (think + answer) one request may generate
    max_queue: int = 64  #: most requests waiting for a batch before new ones are refused
    batch_window_ms: float = 20.0  #: how long the batcher waits to fill a batch, in milliseconds
    max_batch_size: int = 16  #: most requests decoded together in one batch

    def __post_init__(self) -> None:
        raise_if(
            "Limits",
            [
                ("max_body_bytes", int_problem(self.max_body_bytes, 1)),
                ("max_prompt_chars", int_problem(self.max_prompt_chars, 1)),
                ("max_tokens", int_problem(self.max_tokens, 1)),
                ("max_queue", int_problem(self.max_queue, 1)),
                ("batch_window_ms", number_problem(self.batch_window_ms, 0)),
                ("max_batch_size", int_problem(self.max_batch_size, 1)),
            ],
        )


@dataclass
class AuthConfig:
    """Authentication: API keys come from an environment variable, never from the file."""

    api_keys_env: str = "TINA_API_KEYS"  #: name of the env var holding comma-separated API keys
    require_auth: bool = False  #: refuse requests without a valid key

    def __post_init__(self) -> None:
        env_problem = str_problem(self.api_keys_env)
        if env_problem is None and not _ENV_NAME_RE.match(self.api_keys_env):
            env_problem = f"not an environment variable name: {self.api_keys_env!r}"
        raise_if(
            "AuthConfig",
            [("api_keys_env", env_problem), ("require_auth", bool_problem(self.require_auth))],
        )

    def api_keys(self, environ: dict[str, str] | None = None) -> list[str]:
        """The API keys now in the environment variable (comma-separated; blanks dropped)."""
        raw = (os.environ if environ is None else environ).get(self.api_keys_env, "")
        return [key.strip() for key in raw.split(",") if key.strip()]


@dataclass
class ModelRef:
    """Which model to serve: all unset means the embedded model (see
    `tina.core.introspection.load_introspective_model` for the layout)."""

    models_root: str | None = None  #: directory the names below are relative to (None: cwd)
    base: str | None = None  #: base HF model directory (None: the embedded model)
    adapter: str | None = None  #: PEFT LoRA / introspection directory on top of the base
    subfolder: str | None = None  #: subfolder of the adapter directory (e.g. `checkpoint-2000`)

    def __post_init__(self) -> None:
        problems: list[tuple[str, str | None]] = [
            (name, str_problem(getattr(self, name), optional=True))
            for name in ("models_root", "base", "adapter", "subfolder")
        ]
        if self.adapter is not None and self.base is None:
            problems.append(("adapter", "an adapter needs a base: set model.base"))
        if self.subfolder is not None and self.adapter is None:
            problems.append(("subfolder", "a subfolder needs an adapter: set model.adapter"))
        raise_if("ModelRef", problems)


def _default_stops() -> list[str]:
    return list(STOP_SEQUENCES)


@dataclass
class ServiceConfig:
    """Everything the service, evaluation and training share about decoding and serving."""

    stop_sequences: list[str] = field(
        default_factory=_default_stops
    )  #: must hold `</think>` and `</answer>`
    visible_cot: bool = False  #: show the chain of thought by default (hidden unless asked)
    slack_ratio: float = 0.5  #: think budget slack: thinking closes at the step end nearest
    #: the budget, and at budget · (1 + slack) at the latest; 0–4
    min_think: int = 0  #: fewest think tokens before `</think>` may be accepted
    budget_cap: int = 384  #: most think tokens before `</think>` is forced
    #: read the heads where their budget closes thinking and think on while they read "not
    #: ready" (the calibration's `exit_threshold`; nothing without one)
    exit_check: bool = True
    max_answer_tokens: int = 96  #: answer token cap (the refusal is 83 bytes)
    calibration_path: str | None = None  #: confidence calibration JSON (None: uncalibrated)
    host: str = "127.0.0.1"  #: address the HTTP service binds
    port: int = 8000  #: port the HTTP service binds
    limits: Limits = field(default_factory=Limits)  #: request and batching limits
    auth: AuthConfig = field(default_factory=AuthConfig)  #: API-key authentication
    model: ModelRef = field(default_factory=ModelRef)  #: which model to load

    def __post_init__(self) -> None:
        problems: list[tuple[str, str | None]] = []
        stops = self.stop_sequences
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            problems.append(
                ("stop_sequences", f"expected a list of non-empty strings, got {stops!r}")
            )
        else:
            for required in STOP_SEQUENCES:
                if required not in stops:
                    problems.append(("stop_sequences", f"must include {required!r}"))
            if len(set(stops)) != len(stops):
                problems.append(("stop_sequences", "duplicate entries"))
        problems += [
            ("visible_cot", bool_problem(self.visible_cot)),
            ("slack_ratio", number_problem(self.slack_ratio, 0, 4)),
            ("min_think", int_problem(self.min_think, 0)),
            ("budget_cap", int_problem(self.budget_cap, 0)),
            ("exit_check", bool_problem(self.exit_check)),
            ("max_answer_tokens", int_problem(self.max_answer_tokens, 1)),
            ("calibration_path", str_problem(self.calibration_path, optional=True)),
            ("host", str_problem(self.host)),
            ("port", int_problem(self.port, 1, 65535)),
        ]
        for name, kind in (("limits", Limits), ("auth", AuthConfig), ("model", ModelRef)):
            if not isinstance(getattr(self, name), kind):
                problems.append((name, f"expected a {kind.__name__}"))
        if is_int(self.min_think) and is_int(self.budget_cap) and self.min_think > self.budget_cap:
            problems.append(
                ("min_think", f"must not exceed budget_cap ({self.min_think} > {self.budget_cap})")
            )
        if (
            isinstance(self.limits, Limits)
            and is_int(self.max_answer_tokens)
            and self.max_answer_tokens > self.limits.max_tokens
        ):
            problems.append(
                (
                    "max_answer_tokens",
                    f"must not exceed limits.max_tokens "
                    f"({self.max_answer_tokens} > {self.limits.max_tokens})",
                )
            )
        raise_if("ServiceConfig", problems)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; `ServiceConfig.from_dict(c.to_dict()) == c`."""
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: Any, file: str = "<dict>") -> ServiceConfig:
        """Schema-check `payload`, then build the config; a `ConfigError` lists every problem,
        each attributed to `file`."""
        problems = schema_problems(file, payload, SERVICE_CONFIG_SCHEMA)
        if problems:
            raise ConfigError(problems)
        sections: dict[str, Any] = {}
        for name, kind in (("limits", Limits), ("auth", AuthConfig), ("model", ModelRef)):
            try:
                sections[name] = kind(**payload.get(name, {}))
            except ConfigError as exc:
                problems += [Problem(file, f"{name}.{p.field}", p.message) for p in exc.problems]
                sections[name] = kind()
        top = {k: v for k, v in payload.items() if k not in sections}
        try:
            config = cls(**top, **sections)
        except ConfigError as exc:
            problems += [Problem(file, p.field, p.message) for p in exc.problems]
        if problems:
            raise ConfigError(problems)
        return config


# --- files and schemas --------------------------------------------------------------------------


def shipped_service_config_path() -> Path:
    """The service config shipped inside the package (`tina/config/service_config.json`)."""
    return Path(str(resources.files("tina") / "config" / SERVICE_CONFIG_NAME))


def check_service_config(path: str | Path) -> tuple[ServiceConfig | None, list[Problem]]:
    """(config, []) for a good service config file, else (None, every problem found)."""
    payload, problem = read_json_file(path)
    if problem is not None:
        return None, [problem]
    try:
        return ServiceConfig.from_dict(payload, file=str(path)), []
    except ConfigError as exc:
        return None, exc.problems


def load_service_config(path: str | Path | None = None) -> ServiceConfig:
    """The service config at `path` (default: the shipped one), schema-checked; raises
    `ConfigError` listing every problem as `file: field: message`."""
    config, problems = check_service_config(shipped_service_config_path() if path is None else path)
    if config is None:
        raise ConfigError(problems)
    return config
