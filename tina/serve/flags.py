"""`tina serve`'s command line: its flags, the service config they override, the served model id.

Kept apart from `tina.serve.app` so that `tina --help` and every other command build their
parser without the `serve` extra (FastAPI, uvicorn) installed; `tina.serve.app.run_serve` is the
command itself.

What it does not do: load the engine (`tina.serve.runtime`) or serve HTTP (`tina.serve.app`).
"""

from __future__ import annotations

import argparse
from dataclasses import fields, replace
from typing import Any

from tina.core.checks import parse_bool
from tina.serve.service_config import Limits, ServiceConfig

EMBEDDED_MODEL_NAME = "tina-embedded"  #: the model id of the embedded model


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """`tina serve`'s own flags (the model flags come from `runtime.add_model_arguments`); each
    one left out keeps the service config's value."""
    parser.add_argument("--host", default=None, help="address to bind (config: host)")
    parser.add_argument("--port", type=int, default=None, help="port to bind (config: port)")
    for f in fields(Limits):
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=type(f.default),
            default=None,
            help=f"override limits.{f.name} (default: {f.default})",
        )
    parser.add_argument(
        "--require-auth",
        type=parse_bool,
        default=None,
        metavar="BOOL",
        help="require a Bearer key from the env var named by auth.api_keys_env (config: auth)",
    )
    parser.add_argument(
        "--visible-cot",
        type=parse_bool,
        default=None,
        metavar="BOOL",
        help="show the thinking by default, in reasoning_content (config: visible_cot)",
    )
    parser.add_argument(
        "--model-name", default=None, help="model id clients send (default: derived from --base)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )


def service_with_overrides(service: ServiceConfig, args: Any) -> ServiceConfig:
    """`service` with the `add_serve_arguments` flags that were given; bad values are a
    `ConfigError` (the dataclasses check them)."""
    limits = {
        f.name: getattr(args, f.name) for f in fields(Limits) if getattr(args, f.name) is not None
    }
    top = {
        name: getattr(args, name)
        for name in ("host", "port", "visible_cot")
        if getattr(args, name) is not None
    }
    auth = service.auth
    if args.require_auth is not None:
        auth = replace(auth, require_auth=args.require_auth)
    return replace(service, limits=replace(service.limits, **limits), auth=auth, **top)


def served_model_name(args: Any, service: ServiceConfig) -> str:
    """`--model-name`, else `base[/adapter[/subfolder]]`, else the embedded model's name."""
    if args.model_name:
        return str(args.model_name)
    base = args.base or service.model.base
    if base is None:
        return EMBEDDED_MODEL_NAME
    adapter = args.adapter or service.model.adapter
    subfolder = args.subfolder or service.model.subfolder
    return "/".join(p for p in (base, adapter, subfolder) if p)
