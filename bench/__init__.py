"""Benchmarks and diagnostics (not tests), run as modules from the repository root, e.g. `python -m
bench.utility --quick` (`make bench` runs the first five and `tables`): `utility` (held-out bits per byte
against dense and SISA baselines), `train_overhead` (Lightning against a plain PyTorch loop),
`router_stability` (does the router remember earlier domains), `forget_cost` (what forgetting costs and
leaves, against the alternatives), `scaling` (forget and router replay time as K grows), `forget_speedup`
(forgets and drops against full retrains), `audit_methods` (the audit of exact and approximate forgetting),
`dictd_report` (the dictd corpus end to end), `router_settings` (router stage settings), `posterior_mixing`
(what the router costs), `serve_load` (the HTTP server under load), `layout_hashes` (per-file hashes to
show a refactor changes no tensor) and `tables` (copies the tables into docs/BENCHMARKS.md); `common`
holds what they share.
"""
