"""`tina validate` and the service config loader: shipped configs clean, each failure mode found,
every problem reported in one run, CLI exit codes, load_service_config round trip and errors."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tina.cli import main
from tina.core.checks import ConfigError, load_schema, schema_problems, schema_validator
from tina.core.introspection import IntrospectionConfig
from tina.core.metacog_heads import HeadsConfig
from tina.core.side_adapters import AdapterConfig
from tina.core.tags import ensure_reasoning_tokens
from tina.serve.service_config import (
    ADAPTER_CONFIG_SCHEMA,
    GENERATION_CONFIG_SCHEMA,
    INTROSPECTION_CONFIG_SCHEMA,
    SERVICE_CONFIG_SCHEMA,
    AuthConfig,
    Limits,
    ModelRef,
    ServiceConfig,
    load_service_config,
    shipped_service_config_path,
)
from tina.validate import default_paths, run_validation, validate_paths

REPO = Path(__file__).resolve().parents[1]
N_LAYERS = 2


# --- fixtures: a good model dir, adapter dir and service config ---------------------------------


def _write_json(path: Path, payload: Any) -> Path:
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def _edit_json(path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    payload = json.loads(path.read_text())
    edit(payload)
    return _write_json(path, payload)


def _save_model_dir(directory: Path, tokenizer: Any) -> Path:
    """config.json (tiny Qwen2), generation_config.json, tokenizer, introspection_config.json;
    no weights (validation never loads them)."""
    from transformers import GenerationConfig, Qwen2Config

    directory.mkdir(parents=True)
    Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=64,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ).save_pretrained(directory)
    answer_close = tokenizer.convert_tokens_to_ids("</answer>")
    GenerationConfig(
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=[tokenizer.eos_token_id]
        + ([answer_close] if answer_close is not None else []),
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=64,
    ).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    _write_json(directory / "introspection_config.json", IntrospectionConfig().to_dict())
    return directory


@pytest.fixture
def model_dir(tmp_path: Path, byte_char_tokenizer: Any) -> Path:
    """A clean model directory: every tag one id, ids coherent, introspection in range."""
    ensure_reasoning_tokens(byte_char_tokenizer)
    return _save_model_dir(tmp_path / "model", byte_char_tokenizer)


@pytest.fixture
def untagged_model_dir(tmp_path: Path, byte_char_tokenizer_with_think: Any) -> Path:
    """A model directory whose tokenizer carries `<think>`/`</think>` but no other tag."""
    return _save_model_dir(tmp_path / "untagged", byte_char_tokenizer_with_think)


@pytest.fixture
def adapter_dir(tmp_path: Path) -> Path:
    """A PEFT LoRA adapter directory as PEFT writes it, targeting q_proj and v_proj."""
    from peft import LoraConfig

    directory = tmp_path / "adapter"
    LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"
    ).save_pretrained(str(directory))
    return directory


@pytest.fixture
def service(tmp_path: Path) -> Path:
    """A copy of the shipped service config."""
    return Path(shutil.copy(shipped_service_config_path(), tmp_path / "service_config.json"))


def _found(problems: list[Any]) -> list[tuple[str, str, str]]:
    return [(Path(p.file).name, p.field, p.message) for p in problems]


# --- clean ---------------------------------------------------------------------------------------


def test_shipped_configs_validate_clean():
    """The shipped service config and the embedded model (CI runs `tina validate` on them)."""
    report = run_validation(default_paths())
    assert [str(p) for p in report.problems] == []
    assert str(shipped_service_config_path()) in report.files_checked


def test_shipped_service_config_is_clean_and_the_defaults():
    assert validate_paths([shipped_service_config_path()]) == []
    assert load_service_config() == ServiceConfig()
    assert json.loads(shipped_service_config_path().read_text()) == ServiceConfig().to_dict()


def test_repo_root_config_and_schemas_link_into_the_package():
    assert (REPO / "config" / "service_config.json").samefile(shipped_service_config_path())
    for name in (SERVICE_CONFIG_SCHEMA, GENERATION_CONFIG_SCHEMA, ADAPTER_CONFIG_SCHEMA):
        assert (REPO / "schemas" / name).is_file()


def test_fixtures_validate_clean(model_dir, adapter_dir, service):
    report = run_validation([model_dir, adapter_dir, service], base=model_dir)
    assert [str(p) for p in report.problems] == []
    names = {Path(f).name for f in report.files_checked}
    assert {
        "config.json",
        "generation_config.json",
        "introspection_config.json",
        "tokenizer.json",
        "adapter_config.json",
        "service_config.json",
    } <= names


def test_adapter_without_base_skips_the_target_check(adapter_dir):
    _edit_json(adapter_dir / "adapter_config.json", lambda c: c.update(target_modules=["nope"]))
    assert validate_paths([adapter_dir]) == []
    assert _found(validate_paths([adapter_dir], base=adapter_dir.parent / "missing")) == [
        ("missing", "config.json", "not a model directory (no config.json)")
    ]


# --- each failure mode ---------------------------------------------------------------------------


def _service_edit(edit: Callable[[dict[str, Any]], None]) -> Callable[..., Any]:
    def make(tmp: Path, model: Path, adapter: Path, service: Path, untagged: Path) -> Any:
        return [_edit_json(service, edit)], None

    return make


def _model_edit(name: str, edit: Callable[[dict[str, Any]], None]) -> Callable[..., Any]:
    def make(tmp: Path, model: Path, adapter: Path, service: Path, untagged: Path) -> Any:
        _edit_json(model / name, edit)
        return [model], None

    return make


def _adapter_targets(targets: Any) -> Callable[..., Any]:
    def make(tmp: Path, model: Path, adapter: Path, service: Path, untagged: Path) -> Any:
        _edit_json(adapter / "adapter_config.json", lambda c: c.update(target_modules=targets))
        return [adapter], model

    return make


def _two_slacks(tmp: Path, model: Path, adapter: Path, service: Path, untagged: Path) -> Any:
    other = _write_json(tmp / "other.json", {"slack_ratio": 0.25})
    return [service, other], None


def _two_stop_lists(tmp: Path, model: Path, adapter: Path, service: Path, untagged: Path) -> Any:
    other = _write_json(tmp / "other.json", {"stop_sequences": ["</think>", "</answer>", "\n\n"]})
    return [service, other], None


def _malformed(name: str) -> Callable[..., Any]:
    def make(tmp: Path, model: Path, adapter: Path, service: Path, untagged: Path) -> Any:
        if name == "service_config.json":
            service.write_text('{"slack_ratio": 0.15,,}')
            return [service], None
        (model / name).write_text("{not json")
        return [model], None

    return make


def _untagged(tmp: Path, model: Path, adapter: Path, service: Path, untagged: Path) -> Any:
    return [untagged], None


def _stop_not_single_id(
    tmp: Path, model: Path, adapter: Path, service: Path, untagged: Path
) -> Any:
    _edit_json(service, lambda c: c.update(stop_sequences=["</think>", "</answer>", "STOP"]))
    return [service, model], None


def _introspection_alone(
    tmp: Path, model: Path, adapter: Path, service: Path, untagged: Path
) -> Any:
    path = _write_json(tmp / "introspection_config.json", {"adapter_layers": [1.0, 2]})
    return [path], model


CASES = [
    pytest.param(
        _service_edit(lambda c: c.update(slack_ratio="high")),
        [("service_config.json", "slack_ratio", "'high' is not of type 'number'")],
        id="service-wrong-type",
    ),
    pytest.param(
        _service_edit(lambda c: c["limits"].update(max_queue=0)),
        [("service_config.json", "limits.max_queue", "0 is less than the minimum of 1")],
        id="service-out-of-range",
    ),
    pytest.param(
        _service_edit(lambda c: c.update(colour="blue")),
        [("service_config.json", "colour", "unknown key")],
        id="service-unknown-key",
    ),
    pytest.param(
        _service_edit(lambda c: c["auth"].update(api_key="secret")),
        [("service_config.json", "auth.api_key", "unknown key")],
        id="service-unknown-nested-key",
    ),
    pytest.param(
        _service_edit(lambda c: c.update(stop_sequences=["</think>"])),
        [("service_config.json", "stop_sequences", "must include '</answer>'")],
        id="service-missing-answer-stop",
    ),
    pytest.param(
        _service_edit(lambda c: c.update(min_think=500)),
        [("service_config.json", "min_think", "must not exceed budget_cap (500 > 384)")],
        id="service-min-think-over-cap",
    ),
    pytest.param(
        _service_edit(lambda c: c["model"].update(subfolder="checkpoint-2000")),
        [
            (
                "service_config.json",
                "model.subfolder",
                "a subfolder needs an adapter: set model.adapter",
            )
        ],
        id="service-subfolder-without-adapter",
    ),
    pytest.param(
        _malformed("service_config.json"),
        [
            (
                "service_config.json",
                "(file)",
                "invalid JSON: Expecting property name enclosed in double quotes at line 1 col",
            )
        ],
        id="malformed-service-json",
    ),
    pytest.param(
        _malformed("config.json"),
        [
            (
                "config.json",
                "(file)",
                "invalid JSON: Expecting property name enclosed in double quotes at line 1 col",
            )
        ],
        id="malformed-base-config-json",
    ),
    pytest.param(
        _malformed("generation_config.json"),
        [
            (
                "generation_config.json",
                "(file)",
                "invalid JSON: Expecting property name enclosed in double quotes at line 1 col",
            )
        ],
        id="malformed-generation-config-json",
    ),
    pytest.param(
        _untagged,
        [("tokenizer.json", "reasoning_tags", "reasoning tag '<answer>' encodes to 8 ids")],
        id="tag-not-a-single-id",
    ),
    pytest.param(
        _stop_not_single_id,
        [("tokenizer.json", "stop_sequences", "stop sequence 'STOP' encodes to 4 ids")],
        id="stop-sequence-not-a-single-id",
    ),
    pytest.param(
        _model_edit("generation_config.json", lambda c: c.update(eos_token_id=[257, 3])),
        [("generation_config.json", "eos_token_id", "[257, 3] does not hold eos_token_id 256")],
        id="generation-eos-differs-from-base",
    ),
    pytest.param(
        _model_edit("generation_config.json", lambda c: c.update(pad_token_id=256)),
        [("generation_config.json", "pad_token_id", "256 differs from pad_token_id 257")],
        id="generation-pad-differs-from-base",
    ),
    pytest.param(
        _model_edit("generation_config.json", lambda c: c.update(bos_token_id=0)),
        [("generation_config.json", "bos_token_id", "0 differs from bos_token_id 256")],
        id="generation-bos-differs-from-base",
    ),
    pytest.param(
        _model_edit("generation_config.json", lambda c: c.update(top_p=0, eos_token_id="x")),
        [
            (
                "generation_config.json",
                "eos_token_id",
                "'x' is not of type 'integer', 'array', 'null'",
            ),
            ("generation_config.json", "top_p", "0 is less than or equal to the minimum of 0"),
        ],
        id="generation-schema-invalid",
    ),
    pytest.param(
        _adapter_targets(["q_proj", "nonexistent_proj"]),
        [("adapter_config.json", "target_modules[1]", "no module 'nonexistent_proj'")],
        id="adapter-targets-nonexistent-module",
    ),
    pytest.param(
        _adapter_targets(r".*\.nonexistent_proj"),
        [("adapter_config.json", "target_modules", r"'.*\\.nonexistent_proj' matches no module")],
        id="adapter-target-regex-matches-nothing",
    ),
    pytest.param(
        _adapter_targets(7),
        [("adapter_config.json", "target_modules", "7 is not of type 'array', 'string', 'null'")],
        id="adapter-schema-invalid",
    ),
    pytest.param(
        _two_slacks,
        [("other.json", "slack_ratio", "0.25 differs from 0.5 in")],
        id="service-configs-differ-in-slack",
    ),
    pytest.param(
        _two_stop_lists,
        [("other.json", "stop_sequences", "['</think>', '</answer>', '\\n\\n'] differs from")],
        id="service-configs-differ-in-stops",
    ),
    pytest.param(
        _model_edit("generation_config.json", lambda c: c.update(stop_strings=["</answer>"])),
        [],
        id="generation-stop-strings-without-service-config-is-fine",
    ),
    pytest.param(
        _model_edit("introspection_config.json", lambda c: c.update(adapter_layers=[0.5, 7])),
        [
            (
                "introspection_config.json",
                "adapter_layers[1]",
                "taps: layer 7 out of range for 2 layers",
            )
        ],
        id="introspection-adapter-layer-out-of-range",
    ),
    pytest.param(
        _model_edit("introspection_config.json", lambda c: c["heads"].update(taps=[-3, 1.0])),
        [
            (
                "introspection_config.json",
                "heads.taps[0]",
                "taps: layer -3 out of range for 2 layers",
            )
        ],
        id="introspection-tap-out-of-range",
    ),
    pytest.param(
        _introspection_alone,
        [
            (
                "introspection_config.json",
                "adapter_layers[1]",
                "taps: layer 2 out of range for 2 layers",
            )
        ],
        id="introspection-file-against-base",
    ),
    pytest.param(
        _model_edit(
            "introspection_config.json", lambda c: c["heads"].update(pooling="max", extra=1)
        ),
        [
            ("introspection_config.json", "heads.extra", "unknown key"),
            ("introspection_config.json", "heads.pooling", "'max' is not one of ['mean', 'last']"),
        ],
        id="introspection-schema-invalid",
    ),
]


@pytest.mark.parametrize(("make", "expected"), CASES)
def test_each_failure_mode_is_reported_with_file_and_field(
    make, expected, tmp_path, model_dir, adapter_dir, service, untagged_model_dir
):
    paths, base = make(tmp_path, model_dir, adapter_dir, service, untagged_model_dir)
    found = _found(validate_paths(paths, base=base))
    assert len(found) == len(expected), found
    for (file, field, message), (want_file, want_field, want_message) in zip(
        found, expected, strict=True
    ):
        assert (file, field) == (want_file, want_field), found
        assert message.startswith(want_message), found


def test_generation_stop_strings_must_equal_the_service_stops(model_dir, service):
    _edit_json(model_dir / "generation_config.json", lambda c: c.update(stop_strings=["</answer>"]))
    found = _found(validate_paths([service, model_dir]))
    assert [(f, k) for f, k, _ in found] == [("generation_config.json", "stop_strings")]


def test_missing_path_and_unknown_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    found = _found(validate_paths([tmp_path / "nowhere", tmp_path / "empty"]))
    assert [(f, k) for f, k, _ in found] == [("nowhere", "(file)"), ("empty", "(file)")]


def test_every_problem_is_reported_in_one_run(tmp_path, model_dir, adapter_dir, service):
    _edit_json(service, lambda c: c.update(slack_ratio=9, stop_sequences=["</answer>"], colour=1))
    _edit_json(model_dir / "generation_config.json", lambda c: c.update(pad_token_id=3))
    _edit_json(model_dir / "introspection_config.json", lambda c: c.update(adapter_layers=[5]))
    _edit_json(adapter_dir / "adapter_config.json", lambda c: c.update(target_modules=["x_proj"]))
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    found = _found(validate_paths([service, model_dir, adapter_dir, broken], base=model_dir))
    assert {(f, k) for f, k, _ in found} == {
        ("service_config.json", "colour"),
        ("service_config.json", "slack_ratio"),
        ("service_config.json", "stop_sequences"),
        ("generation_config.json", "pad_token_id"),
        ("introspection_config.json", "adapter_layers[0]"),
        ("adapter_config.json", "target_modules[0]"),
        ("broken.json", "(file)"),
    }
    assert len(found) == 7


# --- CLI -----------------------------------------------------------------------------------------


def test_cli_exit_zero_when_clean(model_dir, adapter_dir, service, capsys):
    code = main(
        ["validate", str(model_dir), str(adapter_dir), str(service), "--base", str(model_dir)]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith("ok: ") and out.strip().endswith("files checked")


def test_cli_exit_one_and_every_problem_printed(model_dir, service, capsys):
    _edit_json(service, lambda c: c.update(port="80", colour=1))
    _edit_json(model_dir / "generation_config.json", lambda c: c.update(pad_token_id=3))
    assert main(["validate", str(service), str(model_dir)]) == 1
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines == [
        f"{service}: colour: unknown key",
        f"{service}: port: '80' is not of type 'integer'",
        f"{model_dir / 'generation_config.json'}: pad_token_id: 3 differs from pad_token_id 257 in "
        f"{model_dir.resolve() / 'config.json'}",
    ]
    assert "3 problems found" in captured.err


def test_cli_help_line():
    from tina.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    helps = {c.dest: c.help for c in sub._choices_actions}
    assert (
        helps["validate"]
        == "Check configs, tokenizer tags and adapters; report every problem at once."
    )


# --- the loader and the dataclasses --------------------------------------------------------------


def test_load_service_config_round_trip(tmp_path):
    config = ServiceConfig(
        stop_sequences=["</think>", "</answer>", "<|endoftext|>"],
        visible_cot=True,
        slack_ratio=0.5,
        min_think=4,
        budget_cap=128,
        exit_check=False,
        max_answer_tokens=32,
        calibration_path="calibration.json",
        host="0.0.0.0",
        port=9000,
        limits=Limits(max_queue=3, batch_window_ms=0, max_batch_size=2),
        auth=AuthConfig(api_keys_env="MY_KEYS", require_auth=True),
        model=ModelRef(
            models_root="model", base="base", adapter="Tina", subfolder="checkpoint-2000"
        ),
    )
    path = _write_json(tmp_path / "svc.json", config.to_dict())
    assert load_service_config(path) == config
    assert load_service_config(_write_json(tmp_path / "empty.json", {})) == ServiceConfig()


def test_load_service_config_error_lists_every_bad_field(tmp_path):
    path = _write_json(
        tmp_path / "svc.json",
        {
            "slack_ratio": 5,
            "visible_cot": "no",
            "exit_check": "yes",
            "stop_sequences": ["</answer>"],
            "limits": {"max_batch_size": 0, "queue": 1},
            "auth": {"api_keys_env": "not a name"},
            "mystery": True,
        },
    )
    with pytest.raises(ConfigError) as info:
        load_service_config(path)
    fields = [p.field for p in info.value.problems]
    assert fields == [
        "auth.api_keys_env",
        "exit_check",
        "limits.max_batch_size",
        "limits.queue",
        "mystery",
        "slack_ratio",
        "stop_sequences",
        "visible_cot",
    ]
    lines = str(info.value).splitlines()
    assert len(lines) == len(fields)
    assert all(line.startswith(f"{path}: ") for line in lines)
    assert f"{path}: stop_sequences: must include '</think>'" in lines


def test_load_service_config_names_the_file_when_unreadable(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.json: \(file\): file not found"):
        load_service_config(tmp_path / "nope.json")
    bad = tmp_path / "dup.json"
    bad.write_text('{"port": 1, "port": 2}')
    with pytest.raises(
        ConfigError, match=r"dup\.json: \(file\): invalid JSON: duplicate key 'port'"
    ):
        load_service_config(bad)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"slack_ratio": 4.5}, "slack_ratio", id="slack-above-4"),
        pytest.param({"slack_ratio": -0.1}, "slack_ratio", id="slack-negative"),
        pytest.param({"stop_sequences": ["</think>"]}, "stop_sequences", id="missing-answer-stop"),
        pytest.param({"port": 0}, "port", id="port-zero"),
        pytest.param({"visible_cot": 1}, "visible_cot", id="visible-cot-not-bool"),
        pytest.param({"exit_check": "no"}, "exit_check", id="exit-check-not-bool"),
        pytest.param({"max_answer_tokens": 600}, "max_answer_tokens", id="answer-over-max-tokens"),
        pytest.param({"host": ""}, "host", id="empty-host"),
    ],
)
def test_service_config_post_init_rejects(kwargs, field):
    with pytest.raises(ConfigError) as info:
        ServiceConfig(**kwargs)
    assert [p.field for p in info.value.problems] == [field]


def test_nested_post_init_checks():
    with pytest.raises(ConfigError, match="max_queue"):
        Limits(max_queue=0)
    with pytest.raises(ConfigError, match="api_keys_env"):
        AuthConfig(api_keys_env="A-B")
    with pytest.raises(ConfigError, match="adapter: an adapter needs a base"):
        ModelRef(adapter="Tina")


def test_api_keys_come_from_the_named_env_var():
    auth = AuthConfig(api_keys_env="K")
    assert auth.api_keys({"K": " a, b ,,c "}) == ["a", "b", "c"]
    assert auth.api_keys({}) == []


# --- schemas -------------------------------------------------------------------------------------


def test_every_shipped_schema_is_a_valid_draft_2020_12_schema():
    for name in (
        SERVICE_CONFIG_SCHEMA,
        GENERATION_CONFIG_SCHEMA,
        ADAPTER_CONFIG_SCHEMA,
        INTROSPECTION_CONFIG_SCHEMA,
    ):
        assert load_schema(name)["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        schema_validator(name)


def test_schemas_name_exactly_the_dataclass_fields():
    service = load_schema(SERVICE_CONFIG_SCHEMA)["properties"]
    assert set(service) == set(ServiceConfig().to_dict())
    for section, kind in (("limits", Limits), ("auth", AuthConfig), ("model", ModelRef)):
        assert set(service[section]["properties"]) == set(kind().__dict__)
    intro = load_schema(INTROSPECTION_CONFIG_SCHEMA)["properties"]
    assert set(intro) == set(IntrospectionConfig().to_dict())
    assert set(intro["adapter"]["properties"]) == set(AdapterConfig().__dict__)
    assert set(intro["heads"]["properties"]) == set(HeadsConfig().__dict__)


def test_introspection_defaults_and_a_custom_config_satisfy_the_schema():
    custom = IntrospectionConfig(
        adapter_layers=[0, -1], heads=HeadsConfig(taps=[1], per_layer=True, cog_ops=3)
    )
    for config in (IntrospectionConfig(), custom):
        assert schema_problems("x", config.to_dict(), INTROSPECTION_CONFIG_SCHEMA) == []
