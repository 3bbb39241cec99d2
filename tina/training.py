"""`tina train`'s one entry: run a training config in its mode.

`run(config)` calls the supervised loop (`tina.train.trainer.train`) for `supervised`, the
self-play loop (`tina.selfplay.loop.train_self_play`) for `self_play`, and the supervised loop
with self-play iterations interleaved (`tina.selfplay.loop.HybridSchedule`) for `hybrid`. What it
does not do: read the config (`tina.train.config.load_train_config`) or train anything itself.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from tina.selfplay.loop import HybridSchedule, train_self_play
from tina.train.config import TrainConfig
from tina.train.trainer import train


def run(config: TrainConfig, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) `config` in its mode; returns the run's summary."""
    if config.mode == "self_play":
        return train_self_play(config, resume, progress)
    interleave = partial(HybridSchedule.start, config) if config.mode == "hybrid" else None
    return train(config, resume, progress, interleave=interleave)
