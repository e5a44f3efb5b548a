"""Serving the composed model over HTTP with LitServe: model routes with dynamic batching and streaming,
an OpenAI-compatible completions route, admin routes that forget and drop, and hot swap: workers follow
the `current` pointer, so a forget goes live without a restart. `moe-unlearn serve` runs it."""
