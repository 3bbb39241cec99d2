"""Self-play in the Absolute-Zero style: code tasks proposed and solved by the model itself.

- `tina.selfplay.tasks`: the three task modes (deduction, abduction, induction) as dataclasses,
  their prompts, the checks of proposals and the verifiers of answers, all run through
  `tina.sandbox`.
- `tina.selfplay.buffer`: a bounded, deduplicated buffer of tasks, seeded from the task suite.

The self-play training loop itself (proposer and solver rewards, sampling) is not here.
"""
