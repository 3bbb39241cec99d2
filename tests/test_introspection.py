"""Side adapters, metacognitive heads, and saving/loading the introspection parts."""

from __future__ import annotations

import json
import threading

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from tina.core.introspection import (
    CONFIG_NAME,
    INTROSPECTION_PREFIX,
    WEIGHTS_NAME,
    IntrospectionConfig,
    attach_introspection,
    freeze_base,
    load_introspection,
    load_introspective_model,
    save_introspection,
    trainable_parameters,
)
from tina.core.metacog_heads import HeadsConfig, record_taps, resolve_taps
from tina.core.side_adapters import AdapterConfig, HardConcreteGate, think_mask_context

VOCAB = 300


def tiny_qwen(seed: int = 0, layers: int = 4) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=64,
        max_position_embeddings=128,
        tie_word_embeddings=True,
    )
    return Qwen2ForCausalLM(config).eval()


def _inputs(batch: int = 3, length: int = 12, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, length), generator=g)


def _think_mask(batch: int = 3, length: int = 12, start: int = 4, end: int = 9) -> torch.Tensor:
    mask = torch.zeros(batch, length, dtype=torch.long)
    mask[:, start:end] = 1
    return mask


def _wake(intro, value: float = 1.0) -> None:
    """Give the adapters a non-zero global gate, as training would."""
    with torch.no_grad():
        for adapter in intro.adapters.values():
            adapter.global_gate.fill_(value)


def test_untrained_adapters_leave_outputs_bit_identical():
    model, ids = tiny_qwen(), _inputs()
    base = model(ids).logits
    intro = attach_introspection(model)
    with think_mask_context(torch.ones_like(ids)):
        attached = model(ids).logits
    assert torch.equal(base, attached)
    assert intro.adapters["0"].global_gate.item() == 0.0


def test_deltas_are_confined_to_think_positions():
    model, ids, mask = tiny_qwen(), _inputs(), _think_mask()
    base_hidden = model(ids, output_hidden_states=True).hidden_states
    intro = attach_introspection(model)
    _wake(intro)
    with think_mask_context(mask):
        out = model(ids, output_hidden_states=True)
    # Positions before the think span see no delta at all (causal attention).
    assert torch.equal(out.hidden_states[-1][:, :4], base_hidden[-1][:, :4])
    assert not torch.allclose(out.hidden_states[-1][:, 4:9], base_hidden[-1][:, 4:9])
    # Each adapter adds its delta only where the mask is 1.
    layer = model.model.layers[0]
    captured = {}
    handle = layer.register_forward_hook(lambda m, a, o: captured.setdefault("out", o))
    with think_mask_context(mask):
        model(ids)
    handle.remove()
    adapter = intro.adapters["0"]
    delta = adapter(captured["out"], mask) - captured["out"]  # the same math, applied again
    assert torch.count_nonzero(delta[mask == 0]) == 0
    assert torch.count_nonzero(delta[mask == 1]) > 0


def test_all_zero_mask_and_no_mask_change_nothing():
    model, ids = tiny_qwen(), _inputs()
    base = model(ids).logits
    intro = attach_introspection(model)
    _wake(intro)
    with think_mask_context(torch.zeros_like(ids)):
        assert torch.equal(model(ids).logits, base)
    assert torch.equal(model(ids).logits, base)  # no context: adapters off


def test_gate_activity_and_coverage_are_recorded():
    model, ids, mask = tiny_qwen(), _inputs(), _think_mask()
    intro = attach_introspection(model)
    _wake(intro)
    with think_mask_context(mask):
        model(ids)
    for adapter in intro.adapters.values():
        assert 0.0 < adapter.last_activity <= 1.0
        assert 0.0 < adapter.last_coverage <= 1.0
        assert adapter.last_expected_l0 is not None


@pytest.mark.parametrize("bias", [-2.0, 0.0, 1.5], ids=lambda b: f"log_alpha={b}")
def test_hard_concrete_expected_l0_matches_sampled_rate(bias):
    torch.manual_seed(0)
    gate = HardConcreteGate(8, AdapterConfig())
    with torch.no_grad():
        gate.log_alpha.bias.fill_(bias)
    h = torch.zeros(20_000, 8)
    gate.train()
    z, expected = gate(h)
    assert z.min() >= 0.0 and z.max() <= 1.0
    assert abs((z > 0).float().mean().item() - expected.mean().item()) < 0.02
    gate.eval()
    z1, _ = gate(h)
    z2, _ = gate(h)
    assert torch.equal(z1, z2)  # deterministic at eval


def test_heads_ranges_dtypes_and_one_forward():
    model = tiny_qwen().to(torch.bfloat16)
    config = IntrospectionConfig(heads=HeadsConfig(taps=[0.5, 1.0], b_max=100))
    intro = attach_introspection(model, config)
    ids = _inputs()
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    with record_taps() as taps:
        model(ids)
    handle.remove()
    assert len(calls) == 1 and sorted(taps) == [1, 3]
    out = intro.heads(taps, torch.ones_like(ids))
    assert out.plan_logits.shape == (3, 4) and out.plan_logits.dtype == torch.float32
    assert out.budget.dtype == torch.float32 and ((out.budget >= 0) & (out.budget <= 100)).all()
    assert ((out.confidence > 0) & (out.confidence < 1)).all()
    assert torch.allclose(out.confidence, torch.sigmoid(out.confidence_logit))


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_per_layer_experts_and_aggregator_shapes(pooling):
    model = tiny_qwen()
    heads = HeadsConfig(
        taps=[0.25, 0.5, 1.0],
        per_layer=True,
        pooling=pooling,
        strategy_classes=5,
        cog_ops=7,
        constraint_dim=3,
    )
    intro = attach_introspection(model, IntrospectionConfig(heads=heads))
    ids = _inputs()
    pool_mask = torch.ones_like(ids)
    pool_mask[0, 8:] = 0
    with record_taps() as taps:
        model(ids)
    out = intro.heads(taps, pool_mask)
    assert out.mix_weights is not None and out.mix_weights.shape == (3, 3)
    assert torch.allclose(out.mix_weights.sum(-1), torch.ones(3))
    assert sorted(out.per_layer) == [0, 1, 3]
    for layer_out in out.per_layer.values():
        assert layer_out["plan_logits"].shape == (3, 4)
        assert layer_out["budget"].shape == (3,)
    assert out.extensions["strategy_logits"].shape == (3, 5)
    assert out.extensions["cog_ops_logits"].shape == (3, 7)
    assert out.extensions["constraint_logits"].shape == (3, 3)


def test_pooling_ignores_positions_outside_the_mask():
    model = tiny_qwen()
    intro = attach_introspection(model, IntrospectionConfig(heads=HeadsConfig(pooling="mean")))
    ids = _inputs(batch=1)
    other = ids.clone()
    other[0, 6:] = (other[0, 6:] + 1) % VOCAB  # change only positions after the pooled prompt
    mask = torch.zeros_like(ids)
    mask[0, :6] = 1
    outs = []
    for x in (ids, other):
        with record_taps() as taps:
            model(x)
        outs.append(intro.heads(taps, mask).budget)
    assert torch.equal(outs[0], outs[1])


def test_resolve_taps():
    assert resolve_taps([0.5, 1.0], 4) == [1, 3]
    assert resolve_taps([0, -1, 3], 4) == [0, 3]
    with pytest.raises(ValueError, match="out of range"):
        resolve_taps([7], 4)
    with pytest.raises(ValueError, match="fraction"):
        resolve_taps([1.5], 4)


def test_thread_isolation_of_think_masks():
    model = tiny_qwen()
    intro = attach_introspection(model)
    _wake(intro)
    ids = _inputs()
    masks = [_think_mask(start=s, end=s + 3) for s in (1, 5, 8)] + [
        torch.zeros(3, 12, dtype=torch.long)
    ]
    expected = []
    for m in masks:
        with think_mask_context(m):
            expected.append(model(ids).logits)
    barrier = threading.Barrier(len(masks))
    results: dict[int, list[torch.Tensor]] = {}

    def worker(k: int) -> None:
        barrier.wait()
        for _ in range(5):
            with think_mask_context(masks[k]):
                results.setdefault(k, []).append(model(ids).logits)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(masks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, outs in results.items():
        for out in outs:
            assert torch.equal(out, expected[k])


def test_only_introspection_parameters_train():
    model = tiny_qwen()
    attach_introspection(model)
    freeze_base(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in trainable_parameters(model)}
    assert trainable and all(n.startswith(INTROSPECTION_PREFIX) for n in trainable)


def test_unsupported_architecture_is_a_clear_error():
    class NotADecoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = type("C", (), {"model_type": "gpt2", "hidden_size": 8})()
            self.w = torch.nn.Linear(2, 2)

    with pytest.raises(ValueError, match="unsupported architecture 'gpt2'"):
        attach_introspection(NotADecoder())


def _save_base(model: Qwen2ForCausalLM, tokenizer, directory) -> None:
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def test_save_load_round_trip(tmp_path):
    model, ids, mask = tiny_qwen(), _inputs(), _think_mask()
    intro = attach_introspection(model, IntrospectionConfig(heads=HeadsConfig(per_layer=True)))
    _wake(intro, 0.7)
    save_introspection(intro, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {CONFIG_NAME, WEIGHTS_NAME}
    with think_mask_context(mask), record_taps() as taps:
        before = model(ids).logits
    heads_before = intro.heads(taps, torch.ones_like(ids)).budget

    fresh = tiny_qwen()
    loaded = load_introspection(fresh, tmp_path)
    with think_mask_context(mask), record_taps() as taps:
        after = fresh(ids).logits
    assert torch.equal(before, after)
    assert torch.equal(heads_before, loaded.heads(taps, torch.ones_like(ids)).budget)


@pytest.mark.parametrize(
    "broken",
    ["missing_config", "missing_weights", "corrupt_weights", "corrupt_config", "wrong_shapes"],
)
def test_missing_or_corrupt_files_are_named(tmp_path, broken):
    intro = attach_introspection(tiny_qwen())
    save_introspection(intro, tmp_path)
    if broken == "missing_config":
        (tmp_path / CONFIG_NAME).unlink()
    elif broken == "missing_weights":
        (tmp_path / WEIGHTS_NAME).unlink()
    elif broken == "corrupt_weights":
        (tmp_path / WEIGHTS_NAME).write_bytes(b"not a safetensors file")
    elif broken == "corrupt_config":
        (tmp_path / CONFIG_NAME).write_text("{not json")
    else:
        payload = json.loads((tmp_path / CONFIG_NAME).read_text())
        payload["adapter"]["rank"] = 3
        (tmp_path / CONFIG_NAME).write_text(json.dumps(payload))
    name = CONFIG_NAME if broken in ("missing_config", "corrupt_config") else WEIGHTS_NAME
    with pytest.raises((FileNotFoundError, ValueError), match=name):
        load_introspection(tiny_qwen(), tmp_path)


# peft 0.21's own calls read a property transformers 5.24 deprecates (Tina's load filters it)
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_peft_lora_adapter_loads_and_changes_outputs(tmp_path, byte_char_tokenizer):
    from peft import LoraConfig, PeftModel, get_peft_model

    base = tiny_qwen()
    _save_base(base, byte_char_tokenizer, tmp_path / "Base")
    lora = get_peft_model(
        tiny_qwen(),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    lora.save_pretrained(tmp_path / "Tina" / "checkpoint-2")
    intro = attach_introspection(tiny_qwen())
    save_introspection(intro, tmp_path / "Tina" / "checkpoint-2")

    model, _, loaded = load_introspective_model(
        tmp_path, "Base", adapter="Tina", subfolder="checkpoint-2", device="cpu"
    )
    assert not isinstance(model, PeftModel) and loaded is not None  # merged for inference
    ids = _inputs()
    plain = tiny_qwen()(ids).logits
    reference = (
        PeftModel.from_pretrained(tiny_qwen(), tmp_path / "Tina" / "checkpoint-2")
        .eval()(ids)
        .logits
    )
    got = model(ids).logits
    assert not torch.allclose(got, plain)
    assert torch.allclose(got, reference, atol=1e-5)


def test_adapter_directory_without_known_files_is_an_error(tmp_path, byte_char_tokenizer):
    _save_base(tiny_qwen(), byte_char_tokenizer, tmp_path / "Base")
    (tmp_path / "Empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"adapter_config\.json"):
        load_introspective_model(tmp_path, "Base", adapter="Empty", device="cpu")
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        load_introspective_model(tmp_path, "Nope", device="cpu")
