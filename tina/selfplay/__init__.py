"""Self-play in the Absolute-Zero style: code tasks proposed and solved by the model itself.

- `tina.selfplay.tasks`: the three task modes (deduction, abduction, induction) as dataclasses,
  their prompts, the checks of proposals and the verifiers of answers, all run through
  `tina.data.sandbox`.
- `tina.selfplay.buffer`: a bounded, deduplicated buffer of tasks, seeded from the task suite.
- `tina.train.selfplay_config`: `SelfPlayConfig`, the `self_play:` block of `train_config.yaml`.
- `tina.selfplay.proposer`: the model's proposals (prompt with buffer references, parsing) and
  the grammar composer that serves when they are invalid.
- `tina.selfplay.solver`: sampled and greedy solutions through the engine, verified.
- `tina.selfplay.rewards`: learnability, solver and format rewards, advantages, guidance.
- `tina.selfplay.loop`: one iteration (propose → solve → rewards → policy update of the side
  adapters, KL to the adapters-off reference) and the trainer's `self_play`/`hybrid` modes.
"""
