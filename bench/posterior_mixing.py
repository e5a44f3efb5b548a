"""Benchmark: the mixing rules side by side on one trained model (not a test).

On a trained run directory's held-out records (`plan`'s), the same experts, router and base are scored
with each rule (`model.mixing`): the router's top-1 and top-2 (the first design), the posterior as the
version was built with it, the posterior without pruning (every candidate on every byte) and with a
uniform prior (no router). For each: pooled held-out bits per byte, and `score_batch` throughput in
bytes per second (in-process, the path `/score` takes, 2 threads, best of --repeats), so quality and
serving cost are read together. Also each source's own expert alone (routing told the source: not a
model one can serve).

    .venv/bin/python -m bench.posterior_mixing --run-dir checkpoints/default
"""

import argparse
import copy
import math
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench.common import machine_line, provenance
from moe_unlearn.config import MixingConfig
from moe_unlearn.models.loading import load_version
from moe_unlearn.models.moe import MixtureOfExperts
from moe_unlearn.rundir import REGISTRY_FILE, read_current
from moe_unlearn.storage.builds import served_config
from moe_unlearn.storage.registry import BASE, Registry
from moe_unlearn.training.evaluate import bits_per_byte
from moe_unlearn.training.plan import plan


def variants(model: MixtureOfExperts) -> dict[str, MixtureOfExperts]:
    """The rows: the same experts, router and base under each rule."""
    built = model.mixing
    posterior = built if built.rule == "posterior" else MixingConfig()
    uniform = copy.deepcopy(model.router)  # every expert equally likely a priori: no router
    with torch.no_grad():
        uniform.head.weight.zero_()
        uniform.head.bias.zero_()
    return {
        "router top-1": rebuilt(model, model.router, MixingConfig(rule="router"), 1),
        "router top-2": rebuilt(model, model.router, MixingConfig(rule="router"), 2),
        f"posterior ({'as built' if built.rule == 'posterior' else 'defaults'})": rebuilt(
            model, model.router, posterior, 2
        ),
        "posterior, no pruning": rebuilt(model, model.router, replace(posterior, threshold=0.0), 2),
        "posterior, uniform prior (no router)": rebuilt(model, uniform, posterior, 2),
    }


def rebuilt(model: MixtureOfExperts, router, mixing: MixingConfig, top_k: int) -> MixtureOfExperts:
    experts = dict(zip(model.names[: len(model.experts)], model.experts, strict=True))
    return MixtureOfExperts(experts=experts, router=router, top_k=top_k, mixing=mixing, base=model.base).eval()


class OwnExpert(torch.nn.Module):
    """One expert alone, in the interface `bits_per_byte` scores."""

    def __init__(self, expert, block_size: int):
        super().__init__()
        self.expert, self.block_size = expert, block_size

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.expert(inputs).float().log_softmax(-1), None


def measure(model: MixtureOfExperts, texts: list[bytes], repeats: int) -> tuple[float, float]:
    """(pooled bits per byte, score_batch bytes per second, best of `repeats`)."""
    best, results = math.inf, None
    for _ in range(repeats):
        started = time.perf_counter()
        results = model.score_batch(texts)
        best = min(best, time.perf_counter() - started)
    n = sum(r["bytes"] for r in results)
    return sum(r["bits_per_byte"] * r["bytes"] for r in results) / n, n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, default=Path("checkpoints/default"))
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, manifest = load_version(args.run_dir, read_current(args.run_dir))
    registry = Registry(args.run_dir / REGISTRY_FILE)
    _, heldout = plan(registry, served_config(args.run_dir))
    expert_of = registry.source_map()
    sources = [s for s in heldout if expert_of[s] != BASE]
    texts = [r.text.encode("utf-8") for s in sources for r in heldout[s]]
    print(machine_line(provenance(None)["machine"]))
    print(
        f"- Run directory: {args.run_dir}, version {manifest['version']}, {len(model.experts)} experts, "
        f"{'a base' if model.base is not None else 'no base'}; {len(texts)} held-out records of the expert sources"
    )
    print("\n| mixing | held-out bits/byte | score bytes/s |\n|---|---|---|")
    for label, variant in variants(model).items():
        bpb, speed = measure(variant, texts, args.repeats)
        print(f"| {label} | {bpb:.4f} | {speed:,.0f} |", flush=True)
    index = {name: i for i, name in enumerate(model.names)}
    own = {
        s: bits_per_byte(OwnExpert(model.experts[index[expert_of[s]]], model.block_size), heldout[s]) for s in sources
    }
    size = {s: sum(len(r.text.encode("utf-8")) for r in heldout[s]) for s in sources}
    pooled = sum(own[s] * size[s] for s in sources) / sum(size.values())
    print(f"| own expert alone (routing told the source: not servable) | {pooled:.4f} | - |")


if __name__ == "__main__":
    main()
