"""Benchmark: held-out bits per byte of the composed model against dense and SISA baselines (not a test).

On the built-in corpus (or with --data the dictd corpus of `data prepare dictd`), with the held-out records
the project holds out (`plan`'s: the first `data.eval_records` of each source by id), it trains and scores:

- ours: the composed model as `Run(dir).train` builds it, scored with the router's top-1 and top-2;
- dense-matched: one ByteTransformer with about as many parameters as all experts and the router;
- dense-expert: one ByteTransformer the size of one expert;
- sisa: K expert-size models (K = number of experts), each on a seeded 1/K shard of the training records,
  their next-byte probabilities averaged.

The dense models and SISA train on every training record of every domain through the project's own
`train_expert`: the same loop, AdamW, schedule and hashed data order as our experts. Everyone sees the
same bytes: each expert does `max_epochs` over its own domain, a dense model the same `max_epochs` over
all domains, a SISA model over its shard (with `train.expert.max_steps` set, a dense model gets K times
the steps); the table's "bytes seen" counts them. Ours also trains K router stages on record prefixes.

With a learning-rate grid (`--lrs`, 1e-3 2e-3 4e-3 unless --quick) each model is trained once per lr on
the training records less a seeded validation split (`--val-fraction`), the lr with the lowest validation
mixture bits per byte is kept, and the model is retrained with it on all training records (for ours the
grid sets the experts' lr; the router keeps its own). --quick: 800 records per domain and the config's lr
for every model, no grid. The mixture is all held-out records pooled (bytes-weighted). Writes JSON and
Markdown to --out and a PNG to --plots.

    .venv/bin/python -m bench.utility                 # default config, lr grid: ~52 min on 2 cores (Intel Xeon)
    .venv/bin/python -m bench.utility --lrs 2e-3      # default config, one lr: ~25 min
    .venv/bin/python -m bench.utility --quick         # ~10 min
    .venv/bin/python -m bench.utility --quick --data data/dictd   # dictd, 500 steps an expert
"""

import argparse
import json
import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from bench.common import machine_line, provenance, publish, report_defaults, report_options
from moe_unlearn import Run
from moe_unlearn.config import Config, ExpertModelConfig, OptimConfig, load_config
from moe_unlearn.data.datamodule import ExampleDataModule, expert_dataset
from moe_unlearn.data.dictd import DICTIONARIES as DICTD
from moe_unlearn.data.records import Record
from moe_unlearn.data.splits import seed_for, unit_hash
from moe_unlearn.models.expert import ByteTransformer
from moe_unlearn.models.router import Router
from moe_unlearn.rundir import REGISTRY_FILE
from moe_unlearn.storage.registry import Registry
from moe_unlearn.training.evaluate import bits_per_byte
from moe_unlearn.training.plan import plan
from moe_unlearn.training.trainer import configure_torch, train_expert

QUICK = ["data.corpus.records_per_domain=800"]
QUICK_DICTD = ["train.expert.max_steps=500"]  # dictd experts train a step budget, not epochs
GRID = [1e-3, 2e-3, 4e-3]
METHODS = ("ours", "dense-matched", "dense-expert", "sisa")
Sources = dict[str, list[Record]]


class Ensemble(nn.Module):
    """Byte models averaged in probability (log of the mean), in the interface `bits_per_byte` scores."""

    def __init__(self, models: list[ByteTransformer]):
        super().__init__()
        self.models = nn.ModuleList(models)
        self.block_size = min(m.cfg.block_size for m in models)

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, None]:
        log_p = torch.stack([m(inputs).float().log_softmax(-1) for m in self.models])  # (n, B, T, 256)
        return torch.logsumexp(log_p, dim=0) - math.log(len(self.models)), None


def corpus(config: Path | None, overrides: list[str], data: Path | None = None) -> tuple[Sources, Sources]:
    """(training records, held-out test records) per source, exactly as `plan` splits them (held-out copies
    of trained-on texts, such as canaries, left out): the built-in corpus, or the dictd JSONL files in
    `data` ingested one source each."""
    with tempfile.TemporaryDirectory(prefix="moe-unlearn-corpus-") as tmp:
        run = Run(Path(tmp), console=Console(stderr=True, quiet=True))
        run.init(config, overrides)
        for source in DICTD if data else ():
            run.ingest(source, [data / f"{source}.jsonl"])
        jobs, heldout = plan(Registry(run.run_dir / REGISTRY_FILE), load_config(config, overrides))
    train: Sources = {}
    for job in jobs:
        for r in job.records if job.kind == "expert" else ():
            train.setdefault(r.source, []).append(r)
    return {s: train[s] for s in heldout}, heldout  # in the registry's order of sources


def carve(train: Sources, seed: int, fraction: float) -> tuple[Sources, Sources]:
    """(fit, validation) per source: a seeded share of the training records for choosing the lr."""
    fit, val = {}, {}
    for source, records in train.items():
        fit[source] = [r for r in records if unit_hash(seed, "validation", r.id) >= fraction]
        val[source] = [r for r in records if unit_hash(seed, "validation", r.id) < fraction]
    return fit, val


def params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def expert_params(shape: ExpertModelConfig) -> int:
    with torch.device("meta"):
        return params(ByteTransformer(shape))


def matched_shape(expert: ExpertModelConfig, target: int) -> ExpertModelConfig:
    """The ByteTransformer at least as deep and wide as an expert (same heads and context) whose parameter
    count is closest to `target`."""
    step = 8 * expert.n_head
    shapes = [
        replace(expert, n_layer=n, d_model=d)
        for n in range(expert.n_layer, 4 * expert.n_layer + 1)
        for d in range(expert.d_model, 4 * expert.d_model + 1, step)
    ]
    return min(shapes, key=lambda s: abs(expert_params(s) - target))


def expert_map(cfg: Config) -> dict[str, str]:
    """source -> expert from the config's `experts`; a source not named there has an expert of its own name."""
    return {s: spec.name for spec in cfg.experts for s in spec.sources}


def experts_of(cfg: Config, train: Sources) -> Sources:
    """Training records per expert (the config's source -> expert map; by default one expert per source)."""
    mapping = expert_map(cfg)
    out: Sources = {}
    for source, records in train.items():
        out.setdefault(mapping.get(source, source), []).extend(records)
    return out


def jobs(method: str, cfg: Config, lr: float, train: Sources) -> list[tuple[Config, str, list[Record]]]:
    """The `train_expert` calls (config, name, records) a method makes; ours' are made by `Run.train`."""
    experts = experts_of(cfg, train)
    k = len(experts)
    everything = [r for records in train.values() for r in records]
    opt = replace(cfg.train.expert, lr=lr)
    dense = replace(opt, max_steps=opt.max_steps * k if opt.max_steps > 0 else -1)
    if method == "ours":
        return [(variant(cfg, opt), name, records) for name, records in experts.items()]
    if method == "dense-matched":
        target = sum(expert_params(cfg.model.expert) for _ in experts) + params(Router(cfg.model.router, k))
        shape = matched_shape(cfg.model.expert, target)
        return [(variant(cfg, dense, shape), "dense-matched", everything)]
    if method == "dense-expert":
        return [(variant(cfg, dense), "dense-expert", everything)]
    shards = [[r for r in everything if int(unit_hash(cfg.seed, "sisa", r.id) * k) == i] for i in range(k)]
    return [(variant(cfg, opt), f"sisa-{i}", shard) for i, shard in enumerate(shards)]


def variant(cfg: Config, opt: OptimConfig, shape: ExpertModelConfig | None = None) -> Config:
    """`cfg` with other expert training settings (and another expert shape)."""
    model = replace(cfg.model, expert=shape or cfg.model.expert)
    return replace(cfg, model=model, train=replace(cfg.train, expert=opt))


def bytes_seen(cfg: Config, name: str, records: list[Record]) -> int:
    """Bytes (no padding) in the batches `train_expert(cfg, name, records)` trains on, epoch by epoch."""
    opt = cfg.train.expert
    dataset = expert_dataset(records, cfg.model.expert.block_size)
    batches = ExampleDataModule(dataset, opt.batch_size, seed_for(cfg.seed, "expert", name)).train_dataloader()
    sampler, sizes = batches.batch_sampler, []
    for epoch in range(opt.max_epochs):
        sampler.sampler.set_epoch(epoch)
        sizes += [sum(sampler.lengths[i] for i in batch) for batch in sampler.batches()]
    return sum(sizes[: opt.max_steps] if opt.max_steps > 0 else sizes)


def train(method: str, cfg: Config, lr: float, records: Sources, builtin: bool, work: Path, args, console) -> tuple:
    """Train one method at `lr` on `records` (for ours with `builtin`: the built-in corpus, as users train it):
    (model to score, training seconds, for ours on the built-in corpus the project's own held-out bits per
    byte, else None)."""
    folder = Path(tempfile.mkdtemp(prefix=f"{method}-", dir=work))
    if method != "ours":
        models, started = [], time.perf_counter()
        for job_cfg, name, shard in jobs(method, cfg, lr, records):
            console.print(f"  {name}: {len(shard):,} records, {expert_params(job_cfg.model.expert):,} parameters")
            model = ByteTransformer(job_cfg.model.expert)
            model.load_state_dict(train_expert(job_cfg, name, shard, folder / "logs"))
            models.append(model)
        return Ensemble(models).eval(), time.perf_counter() - started, None
    run = Run(folder / "run", console=console)
    overrides = [*args.overrides, f"train.expert.lr={lr}"]
    if not builtin:  # the grid's fit split or the dictd corpus: a store of exactly these records
        overrides.append("data.builtin=false")
        run.init(args.config, overrides)
        mapping = expert_map(cfg)
        for source, recs in records.items():
            path = folder / f"{source}.jsonl"
            path.write_text("".join(json.dumps({"id": r.id, "text": r.text}) + "\n" for r in recs))
            run.ingest(source, [path], expert=mapping.get(source))
    manifest = run.train(args.config, overrides)
    model, _ = run.load()
    seconds = sum(f["train_seconds"] for f in manifest["files"].values())  # experts and router stages
    return model, seconds, manifest["eval"]["heldout_bpb"] if builtin else None


def score(model: nn.Module, records: Sources) -> dict:
    """Bits per byte per source and of all records pooled (bytes-weighted)."""
    return pooled({s: bits_per_byte(model, recs) for s, recs in records.items()}, records)


def pooled(bpb: dict[str, float], records: Sources) -> dict:
    """Per-source bits per byte and their bytes-weighted mean over all records."""
    size = {s: sum(len(r.text.encode("utf-8")) for r in recs) for s, recs in records.items()}
    return {"heldout_bpb": bpb, "mixture_bpb": sum(bpb[s] * size[s] for s in bpb) / sum(size.values())}


def bench_method(method: str, cfg: Config, args, work: Path, console: Console) -> list[dict]:
    """One method: choose its lr on the validation split (with a grid), retrain on all training records,
    score on the test records. Ours gives one row per top-k."""
    grid = {}
    if len(args.lrs) > 1:
        fit, val = carve(args.train, cfg.seed, args.val_fraction)
        for lr in args.lrs:
            console.print(f"[bold]{method}[/], lr {lr:g}: training on the fit split")
            grid[lr] = score(train(method, cfg, lr, fit, False, work, args, console)[0], val)["mixture_bpb"]
            console.print(f"  validation mixture {grid[lr]:.4f} bits/byte")
    lr = min(grid, key=grid.get) if grid else (args.lrs or [cfg.train.expert.lr])[0]
    console.print(f"[bold]{method}[/], lr {lr:g}: training on all training records")
    model, seconds, project = train(method, cfg, lr, args.train, not args.data, work, args, console)
    calls = jobs(method, cfg, lr, args.train)
    row = {
        "method": method,
        "lr": lr,
        "validation_mixture_bpb": {f"{k:g}": round(v, 4) for k, v in grid.items()},
        "params": params(model),
        "bytes_seen": sum(bytes_seen(*call) for call in calls),
        "train_records": sum(len(records) for _, _, records in calls),
        "train_seconds": round(seconds, 1),
    }
    if method != "ours":
        first = model.models[0].cfg
        row["shape"] = {"n_layer": first.n_layer, "d_model": first.d_model}
        scored = {"model": method, **row, "top_k": None, **score(model, args.test)}
        console.print(f"  {method}: held-out mixture {scored['mixture_bpb']:.4f} bits/byte")
        return [scored]
    rows = []
    for k in sorted({1, 2, cfg.model.router.top_k} & set(range(1, len(model.names) + 1))):
        model.top_k = k
        rows.append({"model": f"ours top-{k}", **row, "top_k": k, **score(model, args.test)})
        console.print(f"  {rows[-1]['model']}: held-out mixture {rows[-1]['mixture_bpb']:.4f} bits/byte")
        if project and k == cfg.model.router.top_k:  # `train` scored the same records itself: a check on the split
            off = max(abs(rows[-1]["heldout_bpb"][s] - project[s]) for s in project)
            colour = "green" if off < 1e-3 else "red"
            console.print(f"  [{colour}]largest difference from the project's own evaluation: {off:.5f}[/]")
    # Diagnostic, not a model one can deploy: each source scored by its own expert (routing told the source).
    mapping = expert_map(cfg)
    own = {s: Ensemble([model.experts[model.names.index(mapping.get(s, s))]]).eval() for s in args.test}
    per = {s: bits_per_byte(own[s], records) for s, records in args.test.items()}
    rows.append({"model": "ours, own expert (no router)", **row, "top_k": None, **pooled(per, args.test)})
    console.print(f"  {rows[-1]['model']}: held-out mixture {rows[-1]['mixture_bpb']:.4f} bits/byte")
    return rows


def targets(rows: list[dict], top_k: int) -> list[dict]:
    """The issue's targets on mixture bits per byte: ours within 2% of dense-matched, 10% better than sisa."""
    by = {r["model"]: r["mixture_bpb"] for r in rows}
    ours = by.get(f"ours top-{top_k}")
    out = []
    for baseline, wording, bound in (
        ("dense-matched", "within 2% of", 1.02),
        ("sisa", "at least 10% better than", 0.9),
    ):
        if ours is not None and baseline in by:  # both were run (--methods)
            out.append(
                {
                    "target": f"ours (top-{top_k}) {wording} {baseline}",
                    "ours": ours,
                    "baseline": by[baseline],
                    "change": ours / by[baseline] - 1,
                    "met": ours <= bound * by[baseline],
                }
            )
    return out


def markdown(report: dict) -> str:
    c, rows = report["config"], report["rows"]
    sources = list(rows[0]["heldout_bpb"])
    lr_note = (
        f"lr grid {', '.join(f'{lr:g}' for lr in report['lrs'])} per model, chosen on a "
        f"{report['val_fraction']:.0%} validation split of the training records"
        if len(report["lrs"]) > 1
        else f"lr {rows[0]['lr']:g} for every model, no lr grid" + (" (--quick)" if report["quick"] else "")
    )
    lines = [
        machine_line(report["machine"]),
        f"- Date: {report['date']}",
        f"- Config: {report['config_file']} + `{' '.join(report['overrides']) or '(no overrides)'}`: "
        f"{c['corpus']} corpus, {c['domains']} sources, {c['train_records']:,} training records, "
        f"{c['test_records']} held-out test records, "
        f"expert n_layer {c['n_layer']} d_model {c['d_model']} block {c['block_size']}, max_epochs {c['max_epochs']}, "
        f"max_steps {c['max_steps']}, batch {c['batch_size']}; {lr_note}",
        f"- Command: `{report['command']}`",
        "",
        "| model | params | lr | bytes seen | train s | " + " | ".join(sources) + " | mixture | vs ours |",
        "|---" * (len(sources) + 7) + "|",
    ]
    ours = next(r["mixture_bpb"] for r in rows if r.get("top_k") == report["top_k"])
    for r in rows:
        shape = f" ({r['shape']['n_layer']}x{r['shape']['d_model']})" if "shape" in r else ""
        per = " | ".join(f"{r['heldout_bpb'][s]:.4f}" for s in sources)
        val = ", ".join(f"{lr}: {bpb:.3f}" for lr, bpb in r["validation_mixture_bpb"].items())
        lr = f"{r['lr']:g}" + (f" (validation {val})" if val else "")
        lines.append(
            f"| {r['model']}{shape} | {r['params']:,} | {lr} | {r['bytes_seen']:,} | {r['train_seconds']} | "
            f"{per} | **{r['mixture_bpb']:.4f}** | {r['mixture_bpb'] / ours - 1:+.1%} |"
        )
    lines += [
        "",
        "Held-out bits per byte (lower is better). Bytes seen: the bytes (no padding) of the batches each model "
        "trained on, over all its models; ours also trains its router stages on record prefixes. Train s: wall "
        "time of the training calls (ours: its experts and router stages, from the manifest). vs ours: mixture "
        f"relative to ours with top-{report['top_k']}. Ours, own expert (no router): each source scored by its own "
        "expert alone, as if the router were told the source: not a model one can serve, it shows what the "
        "router costs.",
        "",
        "| target | ours | baseline | ours vs baseline | met |",
        "|---|---|---|---|---|",
    ]
    for t in report["targets"]:
        met = "pass" if t["met"] else "FAIL"
        lines.append(f"| {t['target']} | {t['ours']:.4f} | {t['baseline']:.4f} | {t['change']:+.1%} | {met} |")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    from matplotlib.figure import Figure  # object API: Agg, no pyplot state

    rows = report["rows"]
    groups = [*rows[0]["heldout_bpb"], "mixture"]
    width = 0.8 / len(rows)
    figure = Figure(figsize=(max(8, 1.6 * len(groups)), 4.5), layout="constrained")
    ax = figure.subplots()
    for i, r in enumerate(rows):
        values = [*r["heldout_bpb"].values(), r["mixture_bpb"]]
        ax.bar([g + i * width for g in range(len(groups))], values, width, label=r["model"])
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], groups)
    ax.set_ylabel("held-out bits per byte (lower is better)")
    ax.set_title(f"Held-out bits per byte, same bytes seen ({report['date'][:10]})")
    figure.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=3, fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{' '.join(QUICK)}, the config's lr only")
    parser.add_argument("--lrs", type=float, nargs="*", help="expert lr grid (default 1e-3 2e-3 4e-3; --quick: none)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="models to train")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="validation share for choosing the lr")
    report_options(parser, "utility")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data.corpus.domains=8")
    args = parser.parse_args()
    console = Console(stderr=True)
    suffix = report_defaults(args, "utility")
    quick = (QUICK_DICTD if args.data else QUICK) if args.quick else []
    args.overrides = ["trainer.progress_bar=false", *quick, *args.overrides]
    args.lrs = args.lrs if args.lrs is not None else ([] if args.quick else GRID)
    cfg = load_config(args.config, args.overrides)
    configure_torch(cfg)
    args.train, args.test = corpus(args.config, args.overrides, args.data)

    rows = []
    with tempfile.TemporaryDirectory(prefix="moe-unlearn-utility-") as tmp:
        for method in args.methods:
            rows += bench_method(method, cfg, args, Path(tmp), console)
    e = cfg.model.expert
    report = {
        **provenance(args.config),
        "overrides": args.overrides,
        "config": {
            "domains": len(args.train),
            "corpus": f"dictd ({args.data})" if args.data else "built-in",
            "train_records": sum(len(r) for r in args.train.values()),
            "test_records": sum(len(r) for r in args.test.values()),
            "n_layer": e.n_layer,
            "d_model": e.d_model,
            "block_size": e.block_size,
            "max_epochs": cfg.train.expert.max_epochs,
            "max_steps": cfg.train.expert.max_steps,
            "batch_size": cfg.train.expert.batch_size,
        },
        "quick": args.quick,
        "lrs": args.lrs,
        "val_fraction": args.val_fraction,
        "top_k": cfg.model.router.top_k,
        "rows": rows,
        "targets": targets(rows, cfg.model.router.top_k),
    }
    for t in report["targets"]:
        colour = "green" if t["met"] else "red"
        console.print(f"[{colour}]{'pass' if t['met'] else 'FAIL'}[/]: {t['target']} ({t['change']:+.1%})")
    publish(report, markdown(report), args.out, plot, args.plots / f"utility{suffix}.png", console)


if __name__ == "__main__":
    main()
