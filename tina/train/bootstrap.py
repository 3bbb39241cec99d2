"""`tina bootstrap`: train Tina's embedded reasoning model from scratch, offline, on 2 CPU cores.

What it does: draws an endless, seeded stream of *verbose*-trace records from the task suite
(mixed tasks and difficulties, a share of the arithmetic in people's phrasings, and
out-of-scope prompts answered with the refusal), trains the merge-free byte tokenizer, and
trains a small Qwen2ForCausalLM on the completions (loss on everything after `<think>`, plus
an end-of-text token) with AdamW, warmup and cosine decay, batches drawn from length-sorted
pools. It writes a plain HF model directory (config.json, generation_config.json,
model.safetensors, tokenizer files with the chat template) that
`AutoModelForCausalLM.from_pretrained` loads.

Deterministic: the same seed, steps and thread count give the same weights.

What it does not do: introspection parts (adapters, heads) — those are trained on top of this
frozen base by `tina train`.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

from tina.core.atomic import atomic_directory
from tina.core.tags import ANSWER_CLOSE, THINK_OPEN, tag_ids
from tina.core.tokenizer import train_byte_tokenizer
from tina.data.tasks import ARITHMETIC, TASKS, task_seed


@dataclass
class BootstrapConfig:
    """Everything that decides the embedded model; saved as `bootstrap_config.json` beside it."""

    seed: int = 0  #: seeds the data stream, the initial weights and the batch order
    steps: int = 3000  #: optimizer steps
    batch_size: int = 64  #: sequences per step
    pool_batches: int = 16  #: batches per length-sorted pool (less padding)
    lr: float = 2e-3  #: peak learning rate
    min_lr_ratio: float = 0.1  #: cosine decays to this fraction of `lr`
    warmup_steps: int = 60  #: linear warmup steps
    weight_decay: float = 0.05  #: AdamW weight decay
    betas: tuple[float, float] = (0.9, 0.98)  #: AdamW betas
    grad_clip: float = 1.0  #: gradient norm clip
    hidden_size: int = 128  #: model width
    layers: int = 4  #: decoder layers
    heads: int = 4  #: attention heads
    kv_heads: int = 2  #: key/value heads (grouped-query attention)
    intermediate_size: int = 512  #: MLP width
    max_positions: int = 512  #: longest sequence the model accepts
    style: str = "verbose"  #: trace style of the corpus
    #: task -> (sampling weight, difficulties, per-difficulty weights)
    mix: dict[str, tuple[float, tuple[int, ...], tuple[float, ...]]] = field(
        default_factory=lambda: {
            "add": (0.21, (1, 2, 3, 4), (0.4, 1.0, 1.5, 2.0)),
            "sub": (0.22, (1, 2, 3, 4), (0.4, 1.0, 1.5, 2.5)),
            "mul": (0.21, (1, 2, 3, 4), (0.4, 1.0, 2.0, 1.2)),
            "mul2": (0.02, (1, 2), (1.0, 1.0)),
            "code_deduction": (0.26, (1, 2, 3, 4), (1.0, 1.5, 1.5, 1.0)),
            "code_abduction": (0.04, (1, 2, 3), (1.0, 1.0, 1.0)),
            "code_induction": (0.04, (1, 2), (1.0, 1.0)),
            "out_of_scope": (0.05, (1,), (1.0,)),
        }
    )
    #: share of the arithmetic records phrased as people write them (the rest: the suite's
    #: own sentences); see `tina.data.tasks.phrasing`
    phrasing_share: float = 0.7
    log_every: int = 50  #: steps between progress lines

    def __post_init__(self) -> None:
        unknown = [t for t in self.mix if t not in TASKS]
        if unknown:
            raise ValueError(f"mix: unknown tasks {unknown}")
        if not 0.0 <= self.phrasing_share <= 1.0:
            raise ValueError("phrasing_share must be within [0, 1]")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be positive")


def record_stream(config: BootstrapConfig) -> Any:
    """Endless seeded stream of corpus texts drawn from `config.mix`."""
    rng = random.Random(task_seed("bootstrap", config.seed))
    names = list(config.mix)
    weights = [config.mix[n][0] for n in names]
    task_rngs = {n: random.Random(task_seed(n, config.seed)) for n in names}
    while True:
        name = rng.choices(names, weights)[0]
        _, levels, level_weights = config.mix[name]
        level = rng.choices(levels, level_weights)[0]
        options = {}
        if name in ARITHMETIC and config.phrasing_share and rng.random() < config.phrasing_share:
            options["phrasing"] = "varied"
        yield TASKS[name].generate(name, task_rngs[name], level, config.style, **options)["text"]


TOKENIZER_CORPUS = 2000  #: texts from the head of the stream that train the tokenizer


def training_questions(config: BootstrapConfig) -> set[str]:
    """The questions of every corpus text that a bootstrap run with `config` trained on."""
    pool = config.batch_size * config.pool_batches
    n_texts = max(TOKENIZER_CORPUS, math.ceil(config.steps / config.pool_batches) * pool)
    stream = record_stream(config)
    return {next(stream).split("\n" + THINK_OPEN, 1)[0] for _ in range(n_texts)}


def _batches(config: BootstrapConfig, tokenizer: Any, think_id: int) -> Any:
    """Yields (input_ids, labels, n_tokens) batches, right-padded, from length-sorted pools."""
    stream = record_stream(config)
    order_rng = random.Random(config.seed + 1)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    while True:
        texts = [next(stream) for _ in range(config.batch_size * config.pool_batches)]
        encoded = [[*ids, eos] for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        encoded.sort(key=len)
        chunks = [
            encoded[i : i + config.batch_size] for i in range(0, len(encoded), config.batch_size)
        ]
        order_rng.shuffle(chunks)
        for chunk in chunks:
            width = max(len(ids) for ids in chunk)
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            labels = torch.full((len(chunk), width), -100, dtype=torch.long)
            for row, ids in enumerate(chunk):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                start = ids.index(think_id) + 1  # loss on the completion only
                labels[row, start : len(ids)] = torch.tensor(ids[start:])
            yield input_ids, labels, sum(len(ids) for ids in chunk)


def build_model(config: BootstrapConfig, tokenizer: Any) -> Qwen2ForCausalLM:
    """A freshly initialised Qwen2 of the configured size for `tokenizer`'s vocabulary."""
    model_config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        num_key_value_heads=config.kv_heads,
        intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return Qwen2ForCausalLM(model_config)


def _lr_factor(step: int, config: BootstrapConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine


def save_model_dir(model: Any, tokenizer: Any, out: Path, extra: dict[str, Any]) -> None:
    """Write the HF model directory as a whole (`tina.core.atomic.atomic_directory`): a reader
    of `out` sees the old model or the new one, never a mix."""
    answer_close = tokenizer.convert_tokens_to_ids(ANSWER_CLOSE)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=[tokenizer.eos_token_id, answer_close],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=256,
    )
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for name, payload in extra.items():
            (tmp / name).write_text(json.dumps(payload, indent=2) + "\n")


def bootstrap(config: BootstrapConfig, out: Path, log: Any = print) -> dict[str, Any]:
    """Train the embedded model and save it to `out`; returns a summary (time, size, loss)."""
    torch.manual_seed(config.seed)
    stream = record_stream(config)
    tokenizer = train_byte_tokenizer(next(stream) for _ in range(TOKENIZER_CORPUS))
    think_id = tag_ids(tokenizer)[THINK_OPEN]
    model = build_model(config, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=config.betas,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, config))
    model.train()
    start = time.perf_counter()
    tokens_seen, window_loss, window_tokens, window_start = 0, 0.0, 0, start
    batches = _batches(config, tokenizer, think_id)
    loss_value = float("nan")
    for step in range(config.steps):
        input_ids, labels, n_tokens = next(batches)
        attention_mask = (input_ids != tokenizer.pad_token_id).long()
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        loss_value = loss.item()
        tokens_seen += n_tokens
        window_loss += loss_value
        window_tokens += n_tokens
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            now = time.perf_counter()
            steps_in_window = (step % config.log_every) + 1
            log(
                f"step {step + 1}/{config.steps} loss {window_loss / steps_in_window:.4f} "
                f"lr {scheduler.get_last_lr()[0]:.2e} "
                f"tok/s {window_tokens / (now - window_start):,.0f} "
                f"elapsed {now - start:,.0f}s"
            )
            window_loss, window_tokens, window_start = 0.0, 0, now
    elapsed = time.perf_counter() - start
    model.eval()
    summary = {
        "parameters": n_params,
        "train_seconds": round(elapsed, 1),
        "tokens_seen": tokens_seen,
        "final_loss": round(loss_value, 5),
        "torch_threads": torch.get_num_threads(),
        "config": asdict(config),
    }
    save_model_dir(model, tokenizer, out, {"bootstrap_config.json": summary})
    return summary


def seen_questions_of(model_dir: Path) -> set[str]:
    """Questions of the bootstrap corpus a model was trained on (from its
    `bootstrap_config.json`), so that evaluation can hold them out; empty if it has none."""
    meta_path = model_dir / "bootstrap_config.json"
    if not meta_path.is_file():
        return set()
    payload = json.loads(meta_path.read_text())["config"]
    payload["betas"] = tuple(payload["betas"])
    payload.setdefault("phrasing_share", 0.0)  # models bootstrapped before phrasings existed
    payload["mix"] = {k: (v[0], tuple(v[1]), tuple(v[2])) for k, v in payload["mix"].items()}
    return training_questions(BootstrapConfig(**payload))
