"""Training: configs, data, losses, one step (`step`), checkpoints, the supervised trainer,
on-policy sampling, budget search and the budget policy, pruning, and the embedded model's
bootstrap. Builds on `tina.eval`, the engine and below; never on `tina.selfplay`."""
