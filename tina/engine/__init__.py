"""The one decode loop: request/result types, the per-row controller, sampling, the forward
loop over one KV cache, and stop strings. Builds on `tina.core` and `tina.data`."""
