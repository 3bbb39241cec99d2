"""`tina sft`: LoRA supervised fine-tuning of a pretrained causal LM on contract records, so that
it learns the reasoning format (`<think>` trace, `</think><answer>…</answer>`) in its own chat
template.

What it does: `sft(config)` loads the base model (`tina.core.models.load_model`: the reasoning
tags become single ids, the embeddings grow), wraps it in a PEFT LoRA (`SFTConfig.target_modules`,
the tags' embedding rows trained through PEFT's `trainable_token_indices`), reads the records
(contract files and/or suite tasks), each prompt rendered by the model's chat template and the
assistant turn closed by its eos (`tina.train.data.chat_text`), and trains on the think and
answer tokens only — logits are computed at those positions alone (`completion_loss`: the LM
head over a 49k vocabulary at every position would be a large share of the step). AdamW,
linear warmup then linear decay, gradient clipping, under Accelerate; checkpoints
`checkpoint-<step>/` are PEFT adapter directories (adapter_config.json,
adapter_model.safetensors, the tokenizer with its tags) plus the loop's state, written
atomically (`tina.train.checkpoints.write_checkpoint`); `resume` goes on from the newest and
ends where a straight run does; SIGTERM/SIGINT stop after the current step with a checkpoint;
metrics go to `metrics.jsonl` (and TensorBoard).

What it does not do: introspection parts (`tina train` trains those on top of this adapter), or
evaluation by decoding (`tina quality`).
"""

from __future__ import annotations

import json
import random
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tina.core.atomic import atomic_write_text
from tina.core.introspection import inner_model
from tina.core.models import load_model
from tina.core.tags import REASONING_TAGS, tag_ids
from tina.data.tasks import generate_records
from tina.train.checkpoints import (
    StopFlag,
    latest_checkpoint,
    load_checkpoint,
    make_accelerator,
    progress_bar,
    prune_checkpoints,
    seed_everything,
    write_checkpoint,
    write_metrics,
)
from tina.train.data import (
    Example,
    TrainDataError,
    batch_order,
    collate,
    example_from_record,
    length_grouped_batches,
    load_examples,
)
from tina.train.sft_config import SFTConfig

MODE = "sft"  #: the mode written into (and required of) the checkpoints' trainer state
SFT_CONFIG_FILE = "sft_config.json"  #: the run's config, in each checkpoint


def shared_prefix_length(batch: dict[str, torch.Tensor]) -> int:
    """How many leading tokens every row of the batch shares (the system prompt and turn
    markers of a chat template), at most up to the shortest prompt (the `<think>` of each row
    stays in its own part, so every labelled position lies after the shared part)."""
    ids = batch["input_ids"]
    if ids.shape[0] < 2:
        return 0
    same = (ids == ids[:1]).all(0).long().cumprod(0)
    prompt = int((batch["labels"] != -100).long().argmax(1).min()) - 1  # first label - 1
    return max(0, min(int(same.sum()), prompt))


def completion_loss(
    model: Any, batch: dict[str, torch.Tensor], share_prefix: bool = True
) -> tuple[torch.Tensor, int]:
    """Mean next-token cross-entropy over the positions whose label is set (the think and
    answer tokens), and how many there are. The decoder runs the batch's shared prefix once
    (`shared_prefix_length`; its keys and values, with their gradients, repeated for every
    row) and each row's rest; the output head runs only over the hidden states that predict a
    labelled token. `share_prefix=False`: the whole batch at once (the same loss)."""
    inner = inner_model(model)
    decoder = inner.get_decoder()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    shared = shared_prefix_length(batch) if share_prefix else 0
    if shared > 0:
        cache = decoder(input_ids=ids[:1, :shared], use_cache=True).cache
        cache.batch_repeat_interleave(ids.shape[0])
        positions = torch.arange(shared, ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
        hidden = decoder(
            input_ids=ids[:, shared:],
            attention_mask=mask,
            cache=cache,
            position_ids=positions,
            use_cache=True,
        ).last_hidden_state
    else:
        hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state
    targets = batch["labels"][:, shared + 1 :]
    where = targets != -100
    logits = inner.get_output_embeddings()(hidden[:, :-1][where])
    return F.cross_entropy(logits.float(), targets[where]), int(where.sum())


class _Step(torch.nn.Module):
    """The model as one module whose forward is the loss: what Accelerate prepares (DDP)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        return completion_loss(self.model, batch)


def sft_examples(tokenizer: Any, config: SFTConfig) -> list[Example]:
    """The run's examples: every record of the `train_data` files, then the suite records of
    `tasks` (drawn with `data_seed`), each rendered for the model (`chat_text`, eos closing
    the turn); a `TrainDataError` naming the file (or the task) on bad data."""
    examples: list[Example] = []
    for path in config.train_data:
        examples += load_examples(tokenizer, path, config.strict_data, config.max_length, eos=True)
    for task, spec in config.tasks.items():
        records = generate_records(
            task,
            int(spec["n"]),
            seed=config.data_seed,
            style=spec.get("style", "concise"),
            difficulties=spec.get("difficulties"),
        )
        for record in records:
            try:
                examples.append(example_from_record(tokenizer, record, config.max_length, True))
            except ValueError as exc:
                if config.strict_data:
                    raise TrainDataError(f"tasks.{task}: record {record['id']}: {exc}") from None
    if not examples:
        raise TrainDataError("no records to train on (train_data and tasks gave none)")
    return examples


def training_questions(config: SFTConfig) -> set[str]:
    """The questions of the suite records a run of `config` trains on (to hold out in
    evaluation; the `train_data` files' records are not included)."""
    return {
        r["meta"]["question"]
        for task, spec in config.tasks.items()
        for r in generate_records(
            task, int(spec["n"]), seed=config.data_seed, difficulties=spec.get("difficulties")
        )
    }


def adapter_training_questions(adapter_dir: Path) -> set[str]:
    """The suite questions an adapter written by `tina sft` trained on, read from the
    `sft_config.json` it carries (empty when it has none): what evaluation holds out."""
    path = Path(adapter_dir) / SFT_CONFIG_FILE
    if not path.is_file():
        return set()
    return training_questions(SFTConfig(**json.loads(path.read_text())))


def _peft_model(model: Any, tokenizer: Any, config: SFTConfig, checkpoint: Path | None) -> Any:
    """The LoRA-wrapped model: fresh from the config, or the checkpoint's adapter to train on."""
    from peft import LoraConfig, PeftModel, get_peft_model

    with warnings.catch_warnings():  # peft 0.21 reads a property transformers 5 renamed
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated")
        warnings.filterwarnings("ignore", ".*tied.*", UserWarning)
        if checkpoint is not None:
            return PeftModel.from_pretrained(model, str(checkpoint), is_trainable=True)
        ids = tag_ids(tokenizer)
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=config.target_modules,
            trainable_token_indices=(
                {"embed_tokens": sorted(ids[t] for t in REASONING_TAGS)}
                if config.train_tag_embeddings
                else None
            ),
            task_type="CAUSAL_LM",
        )
        return get_peft_model(model, lora)


def save_adapter(model: Any, tokenizer: Any, directory: Path, dtype: str = "float32") -> None:
    """A PEFT adapter directory: adapter_config.json, adapter_model.safetensors (LoRA and tag
    rows only, in `dtype`: never the whole embedding matrix) and the tokenizer with its tags."""
    from safetensors.torch import load_file, save_file

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*embedding.*", UserWarning)
        model.save_pretrained(str(directory), save_embedding_layers=False)
    if dtype != "float32":
        path = directory / "adapter_model.safetensors"
        tensors = {k: v.to(getattr(torch, dtype)) for k, v in load_file(str(path)).items()}
        save_file(tensors, str(path), metadata={"format": "pt"})
    tokenizer.save_pretrained(str(directory))


def _write_parts(model: Any, tokenizer: Any, config: SFTConfig, directory: Path) -> None:
    """A checkpoint's files besides the loop's state: the adapter and the run's config."""
    save_adapter(model, tokenizer, directory, config.save_dtype)
    payload = json.dumps(asdict(config), indent=2) + "\n"
    atomic_write_text(directory / SFT_CONFIG_FILE, payload)


def _order(examples: list[Example], config: SFTConfig, world: int, epoch: int) -> list[list[int]]:
    """The epoch's global batches of example indices (`group_by_length`: rows of like length
    together, less padding)."""
    size, seed = config.batch_size * world, config.seed + epoch
    if config.group_by_length:
        return length_grouped_batches([len(e.input_ids) for e in examples], size, seed)
    return batch_order(examples, size, seed)


def _scheduler(optimizer: torch.optim.Optimizer, config: SFTConfig) -> Any:
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, config.warmup_steps, config.steps)


def _eval_loss(model: Any, examples: list[Example], pad_id: int, device: Any) -> float:
    """Token-weighted completion loss on `examples`, without gradients."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), 32):
            batch = collate(examples[start : start + 32], pad_id)
            loss, n = completion_loss(model, {k: v.to(device) for k, v in batch.items()})
            total, count = total + float(loss) * n, count + n
    model.train(was_training)
    return total / max(1, count)


def sft(config: SFTConfig, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the fine-tuning; returns the last metrics line (`stopped` names the
    signal when SIGTERM/SIGINT ended it early). Bad data or a checkpoint of another mode fail
    before anything is written."""
    accelerator = make_accelerator()
    seed_everything(config.seed)
    output = Path(config.output_dir)
    checkpoint = latest_checkpoint(output) if resume else None
    state = load_checkpoint(checkpoint, MODE) if checkpoint is not None else None
    base, tokenizer = load_model(Path(config.models_root) / config.base, str(accelerator.device))
    examples = sft_examples(tokenizer, config)
    eval_examples = (
        load_examples(tokenizer, config.eval_data, config.strict_data, config.max_length, True)
        if config.eval_data
        else []
    )
    model = _peft_model(base, tokenizer, config, checkpoint)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = _scheduler(optimizer, config)
    done, epoch, index = 0, 0, 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        done, epoch, index = state["step"], state["epoch"], state["index"]
        random.setstate(state["python_rng"])
        torch.set_rng_state(state["torch_rng"])
    output.mkdir(parents=True, exist_ok=True)
    world, rank = accelerator.num_processes, accelerator.process_index
    main = accelerator.is_main_process
    writer = None
    if config.tensorboard and main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(output / "tensorboard"), purge_step=done + 1)
    step_module = accelerator.prepare(_Step(model))
    pad = tokenizer.pad_token_id
    batches = _order(examples, config, world, epoch)
    summary: dict[str, Any] = {}
    tokens, loss_tokens, started = 0, 0, time.perf_counter()

    def save() -> None:
        run_state = {
            "step": done,
            "epoch": epoch,
            "index": index,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "python_rng": random.getstate(),
            "torch_rng": torch.get_rng_state(),
            "config": asdict(config),
        }
        write_checkpoint(
            output,
            done,
            lambda tmp: _write_parts(model, tokenizer, config, tmp),
            run_state,
            MODE,
        )
        prune_checkpoints(output, config.keep_checkpoints)

    with StopFlag() as stop, progress_bar("sft", progress and main) as bar:
        task = bar.add_task("sft", total=config.steps, completed=done)
        while done < config.steps:
            if index >= len(batches) or len(batches[index]) < world:
                epoch, index = epoch + 1, 0
                batches = _order(examples, config, world, epoch)
            chosen = [examples[i] for i in batches[index][rank::world]]
            index += 1
            batch = {k: v.to(accelerator.device) for k, v in collate(chosen, pad).items()}
            loss, n_loss = step_module(batch)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            grad_norm = accelerator.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            scheduler.step()
            done += 1
            tokens += int(batch["attention_mask"].sum())
            loss_tokens += n_loss
            bar.advance(task)
            stopping = stop.signal is not None
            saving = done % config.save_every == 0 or done == config.steps or stopping
            if main and (done % config.log_every == 0 or saving):
                elapsed = time.perf_counter() - started
                record: dict[str, Any] = {
                    "step": done,
                    "mode": MODE,
                    "loss": float(loss.detach()),
                    "lr": scheduler.get_last_lr()[0],
                    "grad_norm": float(grad_norm),
                    "epoch": epoch,
                    "tokens_per_s": tokens / elapsed,
                    "loss_tokens_per_s": loss_tokens / elapsed,
                }
                if saving and eval_examples:
                    record["eval_loss"] = _eval_loss(model, eval_examples, pad, accelerator.device)
                if stopping:
                    record["stopped"] = stop.name
                write_metrics(output / "metrics.jsonl", record, writer)
                summary = record
            if main and saving:
                save()
            if stopping:
                break
    if writer is not None:
        writer.close()
    accelerator.wait_for_everyone()
    return summary
