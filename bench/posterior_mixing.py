"""Diagnostic: what the router costs, and what mixing by the experts' own likelihoods would give (not a test).

On a trained run directory's held-out records (`plan`'s), per source and pooled (bytes-weighted), bits per
byte of:

- router: the served model (router weights, top-k), as `score` computes it;
- own expert: each source's own expert alone (routing told the source: not a model one can serve);
- posterior: p(x_t | x_<t) = sum_e P(e | x_<t) p_e(x_t | x_<t) with P(e | x_<t) proportional to the
  product of p_e over the record's bytes before t (uniform prior): Bayesian model averaging over the
  experts, causal, no trained parameters, but every expert runs on every byte.

    .venv/bin/python -m bench.posterior_mixing --run-dir checkpoints/default
"""

import argparse
import math
from pathlib import Path

import torch

from moe_unlearn import Run
from moe_unlearn.data.examples import chunks, lm_example
from moe_unlearn.rundir import REGISTRY_FILE
from moe_unlearn.storage.builds import served_config
from moe_unlearn.storage.registry import Registry
from moe_unlearn.training.plan import plan

KINDS = ("router", "own expert", "posterior")


@torch.no_grad()
def record_nats(model, text: bytes, own: int) -> dict[str, float]:
    """Negative log-likelihood (nats) of one record under each kind of mixing."""
    routed, per_expert = [], []
    for chunk in chunks(text, model.block_size):
        inputs, targets = lm_example(chunk)
        log_p, _ = model(inputs[None])
        routed.append(log_p[0].gather(-1, targets[:, None])[:, 0])
        per_expert.append(
            torch.stack(
                [e(inputs[None])[0].float().log_softmax(-1).gather(-1, targets[:, None])[:, 0] for e in model.experts]
            )
        )
    experts = torch.cat(per_expert, 1).double()  # (K, bytes)
    before = torch.cat([torch.zeros(len(experts), 1, dtype=torch.float64), experts.cumsum(1)[:, :-1]], 1)
    log_w = before - torch.logsumexp(before, 0, keepdim=True)  # log P(e | bytes before t)
    posterior = torch.logsumexp(log_w + experts, 0)
    return {
        "router": -torch.cat(routed).double().sum().item(),
        "own expert": -experts[own].sum().item(),
        "posterior": -posterior.sum().item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, default=Path("checkpoints/default"))
    args = parser.parse_args()
    model, _ = Run(args.run_dir).load()
    cfg = served_config(args.run_dir)
    registry = Registry(args.run_dir / REGISTRY_FILE)
    _, heldout = plan(registry, cfg)
    expert_of = registry.source_map()
    total, total_bytes = dict.fromkeys(KINDS, 0.0), 0
    print(f"| source | {' | '.join(KINDS)} |\n|---|---|---|---|")
    for source, records in heldout.items():
        nats, n = dict.fromkeys(KINDS, 0.0), 0
        for r in records:
            text = r.text.encode("utf-8")
            for kind, value in record_nats(model, text, model.names.index(expert_of[source])).items():
                nats[kind] += value
            n += len(text)
        print(f"| {source} | " + " | ".join(f"{nats[k] / n / math.log(2):.4f}" for k in KINDS) + " |", flush=True)
        total = {k: total[k] + nats[k] for k in KINDS}
        total_bytes += n
    print("| **all** | " + " | ".join(f"**{total[k] / total_bytes / math.log(2):.4f}**" for k in KINDS) + " |")


if __name__ == "__main__":
    main()
