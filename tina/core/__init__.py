"""The model-side parts: tags, tokenizer, models, side adapters, metacognitive heads, their
attachment (introspection), the calibration file, atomic writes and config checks.

`core` imports nothing of Tina's outside itself; every other layer builds on it.
"""
