"""Data: the contract JSONL format (`tina.data.contract`) and the synthetic task suite
(`tina.data.tasks`). Builds on `tina.core` only."""
