"""Build the engine a command runs: model (+ PEFT LoRA + introspection parts), service config,
calibration. Chat, observation, HTTP serving, sweeps and calibration all start here, so they
load the same things the same way. With no model flags, the embedded model runs with the
introspection parts and calibration the think-less recipe shipped into its `introspection/`
directory, when present (`--no-introspection`: the model alone). A model of one's own loads
the parts found beside its adapter (or base) and the calibration file next to them, as
`tina recipe` writes them.

What it does not do: decode (see `tina.engine.loop`) or parse command lines (see `tina.cli`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from tina.core.calibration import CALIBRATION_FILE, load_calibration
from tina.core.introspection import CONFIG_NAME, load_introspective_model
from tina.core.models import embedded_model_dir
from tina.engine.controller import EFFORT_SCALES
from tina.engine.loop import Engine
from tina.engine.types import EngineConfig, Request
from tina.serve.service_config import ServiceConfig, load_service_config

SHIPPED_INTROSPECTION = "introspection"  #: the embedded model's subdirectory of shipped parts


def add_model_arguments(parser: Any) -> None:
    """The model/config flags every engine-running command shares (the seeds' names)."""
    parser.add_argument(
        "--models-root", default=None, help="directory holding the base and adapter directories"
    )
    parser.add_argument(
        "--base",
        default=None,
        help="base HF model directory under --models-root (default: embedded)",
    )
    parser.add_argument(
        "--adapter",
        default=None,
        help="PEFT LoRA and/or introspection directory under --models-root",
    )
    parser.add_argument(
        "--subfolder", default=None, help="checkpoint subfolder of --adapter, e.g. checkpoint-2000"
    )
    parser.add_argument(
        "--calibration", default=None, help="calibration JSON (default: the service config's)"
    )
    parser.add_argument(
        "--service-config", default=None, help="service config JSON (default: the shipped one)"
    )
    parser.add_argument("--budget-cap", type=int, default=None, help="largest think budget")
    parser.add_argument(
        "--no-exit-check",
        action="store_true",
        help="close thinking at the heads' budget without reading whether they are ready "
        "(the service config's exit_check: false)",
    )
    parser.add_argument(
        "--no-introspection",
        action="store_true",
        help="the embedded model alone, without its shipped introspection parts and calibration",
    )
    parser.add_argument(
        "--device", default=None, help="torch device (default: cuda if available, else cpu)"
    )


def _calibration_beside_parts(
    root: Path, base: str, adapter: str | None, subfolder: str | None
) -> str | None:
    """The calibration file next to the introspection parts `load_introspective_model` loaded
    (the adapter's directory first, then the base's: where the recipe writes both)."""
    places = [root / base]
    if adapter is not None:
        places.insert(0, root / adapter / subfolder if subfolder else root / adapter)
    for place in places:
        if (place / CONFIG_NAME).is_file():
            found = place / CALIBRATION_FILE
            return str(found) if found.is_file() else None
    return None


def load_engine(args: Any, service: ServiceConfig | None = None) -> tuple[Engine, ServiceConfig]:
    """The engine for parsed `add_model_arguments` flags; returns it with the service config."""
    service = service or load_service_config(args.service_config)
    base = args.base or service.model.base
    shipped_calibration = None
    if base is None:
        root, base = embedded_model_dir().parent, embedded_model_dir().name
        adapter, subfolder = None, None
        shipped = embedded_model_dir() / SHIPPED_INTROSPECTION
        if not getattr(args, "no_introspection", False) and (shipped / CONFIG_NAME).is_file():
            adapter = f"{base}/{SHIPPED_INTROSPECTION}"  # the recipe's parts, shipped
            if (shipped / CALIBRATION_FILE).is_file():
                shipped_calibration = str(shipped / CALIBRATION_FILE)
    else:
        root = Path(args.models_root or service.model.models_root or ".")
        adapter = args.adapter or service.model.adapter
        subfolder = args.subfolder or service.model.subfolder
    model, tokenizer, intro = load_introspective_model(
        root, base, adapter, subfolder, device=args.device
    )
    if intro is not None and shipped_calibration is None:
        shipped_calibration = _calibration_beside_parts(root, base, adapter, subfolder)
    calibration_path = args.calibration or service.calibration_path or shipped_calibration
    calibration = load_calibration(calibration_path) if calibration_path else None
    config = EngineConfig.from_service_config(service)
    if args.budget_cap is not None:
        config = replace(config, budget_cap=args.budget_cap)
    if getattr(args, "no_exit_check", False):
        config = replace(config, exit_check=False)
    return Engine(model, tokenizer, intro, config, calibration), service


def add_decoding_arguments(parser: Any) -> None:
    """The per-request decoding flags chat and observe share."""
    parser.add_argument(
        "--budget", type=int, default=None, help="fixed think budget (skips the heads' budget)"
    )
    parser.add_argument(
        "--effort",
        choices=tuple(EFFORT_SCALES),
        default=None,
        help="reasoning effort: the heads' budget times "
        + ", ".join(f"{k} {v:g}" for k, v in EFFORT_SCALES.items())
        + " (of the budget cap without heads; --budget wins)",
    )
    parser.add_argument("--max-answer-tokens", type=int, default=None, help="answer token cap")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed")
    parser.add_argument(
        "--stop",
        action="append",
        default=None,
        help="end the answer before this string (repeatable; the thinking is never cut)",
    )


def request_from_args(args: Any, prompt: str, visible_cot: bool | None) -> Request:
    """An engine request for `prompt` with the `add_decoding_arguments` flags."""
    return Request(
        prompt=prompt,
        budget=args.budget,
        effort=getattr(args, "effort", None),
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        visible_cot=visible_cot,
        max_answer_tokens=args.max_answer_tokens,
        stop=tuple(getattr(args, "stop", None) or ()),
    )
