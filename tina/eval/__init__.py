"""Evaluation: budget sweeps, calibration fitting, the exit threshold, metrics, quality tables,
the budget result and plots. Builds on the engine and below."""
