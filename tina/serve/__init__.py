"""Serving: the service config, building an engine from it and from flags (`runtime`), the
micro-batcher, redaction, and the OpenAI-compatible HTTP app (`app`, which needs the `serve`
extra). Builds on the engine and below."""
