"""Data: the contract JSONL format (`tina.data.contract`), question files
(`tina.data.questions`), the synthetic task suite and its scorers (`tina.data.tasks`), and the
sandbox that runs Python from models and users (`tina.data.sandbox`: self-play's tasks and the
`code` scorer of question files both run there, so it sits below both). Builds on `tina.core`
only."""
