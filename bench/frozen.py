"""Benchmark: which parts of an expert branched from the base should train (`train.frozen`), at equal
forget cost (not a test).

Trains the base once on the config's base sources, then every expert source's expert from it under each
variant: the parts `train.frozen` keeps at the base's values (none; the embeddings; the embeddings and
the first block; the embeddings and every attention layer, FlexOlmo's shared parts), each at the
config's epochs. A forget costs one expert's training, so each expert's training seconds are its forget
cost; a frozen variant that trains faster is then trained again with the epochs that spend the same
seconds as the default (3 x its speed-up, rounded down, when that adds an epoch). Each expert is scored
alone on its own source's held-out records (bits per byte; the router and the mixing play no part).
Writes JSON, Markdown and a PNG (bits per byte against seconds, one point per variant).

    .venv/bin/python -m bench.frozen --quick       # 800 records a domain (4 experts, 4 base domains): ~15 min
    .venv/bin/python -m bench.frozen               # the default config's 1,000 records a domain

Times are wall seconds of `train_expert` on this machine (2 threads); compare them within one run.
"""

import argparse
import math
import tempfile
from pathlib import Path
from statistics import mean

from rich.console import Console

from bench.common import machine_line, provenance, publish, report_defaults, report_options, save_figure, timed
from bench.utility import Ensemble, corpus, expert_map
from moe_unlearn.config import load_config
from moe_unlearn.data.corpus import base_corpus_domains
from moe_unlearn.models.expert import ByteTransformer
from moe_unlearn.training.evaluate import bits_per_byte
from moe_unlearn.training.trainer import configure_torch, train_base, train_expert

QUICK = ["data.corpus.records_per_domain=800"]
FIXED = ["trainer.progress_bar=false"]
FROZEN = {  # variant -> the parts `train.frozen` keeps at the base's values
    "none (default)": [],
    "embeddings": ["tok", "pos"],
    "embeddings + blocks.0": ["tok", "pos", "blocks.0"],
    "embeddings + attention": ["tok", "pos", "blocks.*.attn"],  # '*': every block (expanded below)
}


def frozen_parts(parts: list[str], n_layer: int) -> list[str]:
    """`parts` with "blocks.*.X" expanded to every block's X."""
    out = []
    for p in parts:
        out += [p.replace("*", str(i)) for i in range(n_layer)] if "*" in p else [p]
    return out


def equal_cost_epochs(epochs: int, default_s: float, variant_s: float) -> int:
    """The epochs a variant trains in the default's seconds: epochs x speed-up, rounded down."""
    return max(epochs, math.floor(epochs * default_s / variant_s))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="800 records a domain")
    report_options(parser, "frozen", plot="frozen.png (--quick: frozen-quick.png)")
    parser.add_argument("overrides", nargs="*", help="config overrides for every variant")
    args = parser.parse_args()
    if args.data:
        parser.error("--data: this benchmark runs on the built-in corpus only")
    suffix = report_defaults(args, "frozen", dictd_config=False)
    console = Console(stderr=True)
    overrides = [*FIXED, *(QUICK if args.quick else []), *args.overrides]
    cfg = load_config(args.config, overrides)
    configure_torch(cfg)
    base_sources = base_corpus_domains(cfg.data.corpus.domains, cfg.data.corpus.base_domains)
    if not base_sources:
        parser.error("the config has no base sources (data.corpus.base_domains=0): nothing to branch from")
    train, test = corpus(args.config, overrides)
    mapping = expert_map(cfg)
    experts = {s: mapping.get(s, s) for s in train if s not in base_sources}
    epochs = cfg.train.expert.max_epochs
    with tempfile.TemporaryDirectory(prefix="moe-unlearn-frozen-") as tmp:
        base_records = [r for s in base_sources for r in train[s]]
        console.print(f"training the base on {len(base_records):,} records")
        base, base_s = timed(train_base, cfg, base_records, Path(tmp) / "base")
        rows = []

        def measure(name: str, parts: list[str], n_epochs: int) -> dict:
            frozen = frozen_parts(parts, cfg.model.expert.n_layer)
            vcfg = load_config(
                args.config,
                [*overrides, f"train.frozen=[{','.join(frozen)}]", f"train.expert.max_epochs={n_epochs}"],
            )
            per, seconds = {}, {}
            for source, expert in experts.items():
                records = [r for s, rs in train.items() if mapping.get(s, s) == expert for r in rs]
                logs = Path(tmp) / f"variant-{len(rows)}"  # one log folder per variant: none overwritten
                tensors, seconds[source] = timed(train_expert, vcfg, expert, records, logs, base)
                model = ByteTransformer(vcfg.model.expert)
                model.load_state_dict(tensors)
                per[source] = round(bits_per_byte(Ensemble([model]).eval(), test[source]), 4)
            total = sum(len(r.text.encode()) for s in experts for r in test[s])
            pooled = sum(per[s] * sum(len(r.text.encode()) for r in test[s]) for s in experts) / total
            row = {
                "variant": name,
                "frozen": frozen,
                "epochs": n_epochs,
                "seconds": {s: round(t, 1) for s, t in seconds.items()},
                "mean_seconds": round(mean(seconds.values()), 1),
                "heldout_bpb": per,
                "mixture_bpb": round(pooled, 4),
            }
            console.print(f"  {name}, {n_epochs} epochs: {row['mixture_bpb']:.4f} bits/byte, {row['mean_seconds']} s")
            return row

        for name, parts in FROZEN.items():
            rows.append(measure(name, parts, epochs))
        default_s = rows[0]["mean_seconds"]
        for row in list(rows[1:]):
            more = equal_cost_epochs(epochs, default_s, row["mean_seconds"])
            if more > epochs:
                rows.append(measure(f"{row['variant']}, equal cost", FROZEN[row["variant"]], more))
    report = {
        **provenance(args.config),
        "overrides": overrides,
        "quick": args.quick,
        "base_sources": list(base_sources),
        "base_records": len(base_records),
        "base_seconds": round(base_s, 1),
        "experts": experts,
        "train_records": {s: len(train[s]) for s in experts},
        "test_records": {s: len(test[s]) for s in experts},
        "rows": rows,
    }
    publish(report, markdown(report), args.out, plot, args.plots / f"frozen{suffix}.png", console)


def markdown(report: dict) -> str:
    sources = list(report["experts"])
    default = report["rows"][0]
    lines = [
        machine_line(report["machine"]),
        f"- Date: {report['date']}",
        f"- Config: {report['config_file']} + `{' '.join(report['overrides'])}`; base on "
        f"{report['base_records']:,} records of {', '.join(report['base_sources'])} ({report['base_seconds']} s); "
        f"experts on {', '.join(f'{s} {n:,}' for s, n in report['train_records'].items())} records",
        f"- Command: `{report['command']}`",
        "",
        "| frozen (kept at the base's values) | epochs | expert train s (mean) | "
        + " | ".join(sources)
        + " | mixture | vs default |",
        "|---|---|---|" + "---|" * len(sources) + "---|---|",
    ]
    for r in report["rows"]:
        change = 100 * (r["mixture_bpb"] / default["mixture_bpb"] - 1)
        lines.append(
            f"| {r['variant']} | {r['epochs']} | {r['mean_seconds']:.1f} | "
            + " | ".join(f"{r['heldout_bpb'][s]:.4f}" for s in sources)
            + f" | **{r['mixture_bpb']:.4f}** | {change:+.1f}% |"
        )
    lines += [
        "",
        "Held-out bits per byte of each expert alone on its own source (mixture: pooled, bytes-weighted). A forget "
        "retrains one expert, so its training seconds are the forget's cost; equal cost: the epochs a faster variant "
        "trains in the default's seconds.",
    ]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = figure.subplots()
    for r in report["rows"]:
        ax.plot(r["mean_seconds"], r["mixture_bpb"], "o")
        ax.annotate(f"{r['variant']} ({r['epochs']} ep)", (r["mean_seconds"], r["mixture_bpb"]), fontsize=7)
    ax.set_xlabel("expert training seconds (= forget cost), mean over experts")
    ax.set_ylabel("held-out bits/byte, own expert")
    ax.set_title("Frozen parts of experts branched from the base")
    ax.grid(alpha=0.3)
    save_figure(figure, path)


if __name__ == "__main__":
    main()
