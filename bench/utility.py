"""Benchmark: held-out bits per byte of the composed model against dense and SISA baselines (not a test).

On the built-in corpus (with `data.corpus.base_domains=N`, N of its domains are base sources) or with
--data the dictd corpus of `data prepare dictd` (--base-sources, default gcide, ingested with role base;
the other dictionaries are expert sources), with the held-out records `plan` gives for every source (the
first `data.eval_records` by id), it trains and scores, all on the same training records:

- ours (<rule>): the composed model as `Run(dir).train` builds it (the base on the base sources first,
  each expert branched from it), mixed by the config's `model.mixing` (posterior by default);
- ours, router top-k: the same trained model re-scored with the `router` rule, top-1 and top-2;
- ours, own expert (no router): a diagnostic, each source scored by its own expert (base sources by
  the base), as if the router were told the source: not a model one can serve;
- dense-matched: one ByteTransformer with about as many parameters as the whole mixture (base,
  experts, router), trained on every training record, base ones included;
- dense-active: one ByteTransformer with about our active parameters per byte (`mixing.keep`
  candidates under posterior, `top_k` experts under router, plus the router), on the same records;
- sisa: K (number of experts) expert-size models from scratch, each on a seeded 1/K shard of all
  training records (base ones included), their next-byte probabilities averaged;
- sisa from base: the base trained as ours trains it (ours' base tensors are reused when its records
  and lr match), then K models branched from it, each on a seeded 1/K shard of the expert-source
  records, averaged (only with base sources).

Every model trains through the project's own `train_expert` / `train_base`: the same loop, AdamW,
schedule and hashed data order as ours. Everyone sees the same bytes: ours does the base's epochs over
the base records and each expert's over its own; when they are the same epochs, a dense model does
them over all records and a SISA model over its shard; when they differ (by default the experts train
3 epochs, the base 2), a dense model trains until it has seen ours' bytes (base and experts), a SISA
model 1/K of them, a SISA model from base 1/K of ours' experts'. With step limits (`max_steps`), a
dense model gets the steps of all of ours' transformers together, each plain SISA model 1/K of them,
and each SISA model from base 1/K of ours' experts'. The table's "bytes seen" counts them (the base's
training included; ours' router stages, on record prefixes, not).

With a learning-rate grid (`--lrs`, 1e-3 2e-3 4e-3 unless --quick) each model is trained once per lr on
the training records less a seeded validation split (`--val-fraction`), the lr with the lowest validation
mixture bits per byte (expert sources) is kept, and the model is retrained with it on all training
records (for ours the grid sets train.expert.lr and train.base.lr together; the router keeps its own).
--quick: 800 records per domain (dictd: 500 steps a transformer) and the config's lr, no grid. The
mixture is the held-out records of the expert sources pooled (bytes-weighted); "all" pools every source,
base ones included. Writes JSON and Markdown to --out and a PNG to --plots.

Run times (2 threads, 2 cores): the first two were measured on 2026-12-02, before the base (Intel Xeon,
alone, no base sources); the quick one on 2026-12-04 on an AMD EPYC, alone, with the default's 4 base
sources.

    .venv/bin/python -m bench.utility                 # default config, lr grid: ~52 min before the base
    .venv/bin/python -m bench.utility --lrs 2e-3      # default config, one lr: ~25 min before the base
    .venv/bin/python -m bench.utility --quick         # 4 base sources (the default): 24 min
    .venv/bin/python -m bench.utility --quick --data data/dictd   # dictd, gcide the base, 500 steps a model
"""

import argparse
import functools
import itertools
import json
import math
import tempfile
from collections.abc import Collection, Iterator
from dataclasses import astuple, replace
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from bench.common import machine_line, provenance, publish, report_defaults, report_options, save_figure, timed
from moe_unlearn import Run
from moe_unlearn.config import Config, ExpertModelConfig, MixingConfig, OptimConfig, load_config
from moe_unlearn.data.corpus import base_corpus_domains
from moe_unlearn.data.datamodule import ExampleDataModule, expert_dataset
from moe_unlearn.data.dictd import DICTIONARIES as DICTD
from moe_unlearn.data.records import Record
from moe_unlearn.data.splits import ids_digest, seed_for, unit_hash
from moe_unlearn.models.expert import ByteTransformer
from moe_unlearn.models.mixing import settings as mixing_settings
from moe_unlearn.models.moe import BASE, MixtureOfExperts
from moe_unlearn.models.router import FeatureRouter, Router, feature_size
from moe_unlearn.rundir import BASE_FILE, REGISTRY_FILE
from moe_unlearn.storage.registry import Registry
from moe_unlearn.training.evaluate import bits_per_byte
from moe_unlearn.training.plan import plan, reads_base
from moe_unlearn.training.trainer import configure_torch, train_base, train_expert

QUICK = ["data.corpus.records_per_domain=800"]
QUICK_DICTD = ["train.expert.max_steps=500", "train.base.max_steps=2000"]  # 1/8 of dictd.yaml's step budgets
DICTD_BASE = ("gcide",)  # the dictd sources ingested with role base unless --base-sources says otherwise
GRID = [1e-3, 2e-3, 4e-3]
METHODS = ("ours", "dense-matched", "dense-active", "sisa", "sisa-from-base")
LABELS = {"sisa-from-base": "sisa from base"}  # the table's name of a method, where it differs
Sources = dict[str, list[Record]]
Call = tuple[Config, str, list[Record]]  # one `train_expert` call (or `train_base`, when the name is BASE)


class Ensemble(nn.Module):
    """Byte models averaged in probability (log of the mean), in the interface `bits_per_byte` scores."""

    def __init__(self, models: list[ByteTransformer]):
        super().__init__()
        self.models = nn.ModuleList(models)
        self.block_size = min(m.cfg.block_size for m in models)

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, None]:
        log_p = torch.stack([m(inputs).float().log_softmax(-1) for m in self.models])  # (n, B, T, 256)
        return torch.logsumexp(log_p, dim=0) - math.log(len(self.models)), None


def corpus(
    config: Path | None, overrides: list[str], data: Path | None = None, base: Collection[str] = ()
) -> tuple[Sources, Sources]:
    """(training records, held-out test records) per source, exactly as `plan` splits them (held-out copies
    of trained-on texts, such as canaries, left out), base sources' included: the built-in corpus, or the
    dictd JSONL files in `data` ingested one source each (those named in `base` with role base)."""
    with tempfile.TemporaryDirectory(prefix="moe-unlearn-corpus-") as tmp:
        run = Run(Path(tmp), console=Console(stderr=True, quiet=True))
        run.init(config, overrides)
        for source in DICTD if data else ():
            run.ingest(source, [data / f"{source}.jsonl"], role="base" if source in base else None)
        jobs, heldout = plan(Registry(run.run_dir / REGISTRY_FILE), load_config(config, overrides))
    train: Sources = {}
    for job in jobs:
        for r in job.records if job.kind in ("base", "expert") else ():
            train.setdefault(r.source, []).append(r)
    return {s: train[s] for s in heldout}, heldout  # in the registry's order of sources (base ones first)


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
    return _transformer_params(*astuple(shape))


@functools.cache
def _transformer_params(*fields) -> int:  # matched_shape asks for hundreds of shapes
    with torch.device("meta"):
        return params(ByteTransformer(ExpertModelConfig(*fields)))


def router_params(cfg: Config, n_experts: int, has_base: bool = False) -> int:
    """Parameters of ours' router (a FeatureRouter head when it reads the base's features)."""
    with torch.device("meta"):
        if reads_base(cfg, has_base):
            return params(FeatureRouter(cfg.model.router, feature_size(cfg.model.expert.d_model), n_experts))
        return params(Router(cfg.model.router, n_experts))


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


def active_models(mixing: MixingConfig, top_k: int, n_experts: int, has_base: bool, router_reads_base: bool) -> int:
    """Transformers a byte runs through under `mixing` (posterior: the `keep` candidates left after pruning;
    every candidate when it never prunes), the router's own parameters not counted. A router that reads
    the base's features runs the base on every byte: it counts once more (an upper bound: the base may
    also be one of the kept)."""
    if mixing.rule == "posterior":
        candidates = n_experts + has_base
        kept = min(mixing.keep, candidates) if mixing.threshold > 0 else candidates
        return min(kept + router_reads_base, candidates)
    return min(top_k, n_experts) + router_reads_base


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


def jobs(method: str, cfg: Config, lr: float, train: Sources, base: Collection[str] = ()) -> list[Call]:
    """The training calls (config, name, records) a method makes, in order: a call named BASE is a
    `train_base`, and the calls after it branch from its tensors (`train_expert(..., base=)`). Ours' are
    made by `Run.train` (listed for the bytes accounting). `base`: the base sources among `train`'s."""
    trunk_records = [r for source, records in train.items() if source in base for r in records]
    experts = experts_of(cfg, {s: records for s, records in train.items() if s not in base})
    k = len(experts)
    everything = [r for records in train.values() for r in records]
    opt = replace(cfg.train.expert, lr=lr)
    tuned = variant(cfg, opt, base_opt=replace(cfg.train.base, lr=lr))
    trunk = [(tuned, BASE, trunk_records)] if trunk_records else []
    ours = trunk + [(tuned, name, records) for name, records in experts.items()]
    if method == "ours":
        return ours
    if method in ("dense-matched", "dense-active"):
        has_base, routing = bool(trunk), router_params(cfg, k, bool(trunk))
        if method == "dense-matched":  # the whole mixture: base, experts, router
            target = (len(trunk) + k) * expert_params(cfg.model.expert) + routing
        else:  # what one byte runs through
            active = active_models(cfg.model.mixing, cfg.model.router.top_k, k, has_base, reads_base(cfg, has_base))
            target = active * expert_params(cfg.model.expert) + routing
        dense = variant(tuned, opt, matched_shape(cfg.model.expert, target))
        return [(budgeted(dense, method, everything, ours, 1), method, everything)]
    if method == "sisa":
        parts = shards(everything, cfg.seed, k)
        return [(budgeted(tuned, f"sisa-{i}", part, ours, k), f"sisa-{i}", part) for i, part in enumerate(parts)]
    if method == "sisa-from-base":
        if not trunk:
            return []
        expert_records = [r for records in experts.values() for r in records]
        parts = shards(expert_records, cfg.seed, k)
        return trunk + [
            (budgeted(tuned, f"sisa-base-{i}", p, ours[1:], k), f"sisa-base-{i}", p) for i, p in enumerate(parts)
        ]
    raise ValueError(f"unknown method {method!r}; methods: {', '.join(METHODS)}")


def shards(records: list[Record], seed: int, k: int) -> list[list[Record]]:
    """A seeded 1/k shard of the records each (a record's shard depends on its id alone)."""
    return [[r for r in records if int(unit_hash(seed, "sisa", r.id) * k) == i] for i in range(k)]


def share(budget: int, k: int) -> int:
    """One of k models' step limit when they share `budget` steps (-1: no limit, epochs decide)."""
    return -1 if budget <= 0 else math.ceil(budget / k)


def steps_budget(calls: list[Call]) -> int:
    """-1 when epochs decide every call alike (no step limit, one `max_epochs`: the same epochs over all
    the records are the same bytes), else the optimizer steps the calls take together."""
    settings = [optimiser(c, name) for c, name, _ in calls]
    if all(o.max_steps <= 0 for o in settings) and len({o.max_epochs for o in settings}) == 1:
        return -1
    return sum(len(batch_bytes(*call)) for call in calls)


def budgeted(cfg: Config, name: str, records: list[Record], ours: list[Call], k: int) -> Config:
    """`cfg` for a baseline model that gets its 1/k share of what `ours`' calls train: their optimizer
    steps under step limits; when they all train the same epochs, those epochs over its records (the same
    bytes); otherwise (the base and the experts train different epochs) the steps that reach its share of
    their bytes, as many epochs as that takes."""
    steps = steps_budget(ours)
    if steps <= 0:
        return variant(cfg, replace(cfg.train.expert, max_steps=-1, max_epochs=optimiser(*ours[0][:2]).max_epochs))
    if any(optimiser(c, n).max_steps > 0 for c, n, _ in ours):
        return variant(cfg, replace(cfg.train.expert, max_steps=share(steps, k), max_epochs=steps))
    target, seen, steps = share(sum(bytes_seen(*call) for call in ours), k), 0, 0
    unlimited = variant(cfg, replace(cfg.train.expert, max_steps=-1, max_epochs=10**6))
    for size in batches(unlimited, name, records):
        seen, steps = seen + size, steps + 1
        if seen >= target:
            break
    return variant(cfg, replace(cfg.train.expert, max_steps=steps, max_epochs=steps))


def optimiser(cfg: Config, name: str) -> OptimConfig:
    """The settings a call trains with: train.base for the base, train.expert for every other model."""
    return cfg.train.base if name == BASE else cfg.train.expert


def variant(
    cfg: Config, opt: OptimConfig, shape: ExpertModelConfig | None = None, base_opt: OptimConfig | None = None
) -> Config:
    """`cfg` with other expert training settings (and another expert shape, other base settings)."""
    model = replace(cfg.model, expert=shape or cfg.model.expert)
    return replace(cfg, model=model, train=replace(cfg.train, expert=opt, base=base_opt or cfg.train.base))


def batches(cfg: Config, name: str, records: list[Record]) -> Iterator[int]:
    """Bytes (no padding) of each batch the call would train on, epoch by epoch (no step limit)."""
    opt = optimiser(cfg, name)
    dataset = expert_dataset(records, cfg.model.expert.block_size)
    seed = seed_for(cfg.seed, "base", BASE) if name == BASE else seed_for(cfg.seed, "expert", name)
    sampler = ExampleDataModule(dataset, opt.batch_size, seed).train_dataloader().batch_sampler
    for epoch in range(opt.max_epochs):
        sampler.sampler.set_epoch(epoch)
        for batch in sampler.batches():
            yield sum(sampler.lengths[i] for i in batch)


def batch_bytes(cfg: Config, name: str, records: list[Record]) -> list[int]:
    """Bytes (no padding) of each batch the call trains on, up to its step limit."""
    limit = optimiser(cfg, name).max_steps
    return list(itertools.islice(batches(cfg, name, records), limit if limit > 0 else None))


def bytes_seen(cfg: Config, name: str, records: list[Record]) -> int:
    """Bytes (no padding) in the batches the call trains on."""
    return sum(batch_bytes(cfg, name, records))


def train(method: str, cfg: Config, lr: float, records: Sources, builtin: bool, work: Path, args, console) -> tuple:
    """Train one method at `lr` on `records` (for ours with `builtin`: the built-in corpus, as users train it):
    (model to score, training seconds, for ours on the built-in corpus the project's own held-out bits per
    byte, else None). A base trained here or by ours is kept in `args.bases` by (lr, record ids)."""
    folder = Path(tempfile.mkdtemp(prefix=f"{method}-", dir=work))
    if method != "ours":
        models, seconds, trunk = [], 0.0, None
        for job_cfg, name, shard in jobs(method, cfg, lr, records, args.base):
            size = f"{len(shard):,} records, {expert_params(job_cfg.model.expert):,} parameters"
            if name == BASE:
                key = (lr, ids_digest(r.id for r in shard))
                if key in args.bases:
                    console.print(f"  base: ours' base ({size}, same lr), not trained again")
                else:
                    console.print(f"  base: {size}")
                    args.bases[key] = timed(train_base, job_cfg, shard, folder / "logs")
                trunk, s = args.bases[key]
                seconds += s  # the base's training counts, reused or not
                continue
            console.print(f"  {name}: {size}" + (", from the base" if trunk else ""))
            model = ByteTransformer(job_cfg.model.expert)
            tensors, s = timed(train_expert, job_cfg, name, shard, folder / "logs", trunk)
            model.load_state_dict(tensors)
            models.append(model)
            seconds += s
        return Ensemble(models).eval(), seconds, None
    run = Run(folder / "run", console=console)
    overrides = [*args.overrides, f"train.expert.lr={lr}", f"train.base.lr={lr}"]
    if not builtin:  # the grid's fit split or the dictd corpus: a store of exactly these records
        overrides.append("data.builtin=false")
        run.init(args.config, overrides)
        mapping = expert_map(cfg)
        for source, recs in records.items():
            path = folder / f"{source}.jsonl"
            path.write_text("".join(json.dumps({"id": r.id, "text": r.text}) + "\n" for r in recs))
            if source in args.base:
                run.ingest(source, [path], role="base")
            else:
                run.ingest(source, [path], expert=mapping.get(source))
    manifest = run.train(args.config, overrides)
    model, _ = run.load()
    if model.base is not None:  # for sisa from base: the same base, trained once
        key = (lr, ids_digest(r.id for s in args.base for r in records.get(s, ())))
        tensors = {k: v.detach().clone() for k, v in model.base.state_dict().items()}
        args.bases[key] = (tensors, manifest["files"][BASE_FILE]["train_seconds"])
    seconds = sum(f["train_seconds"] for f in manifest["files"].values())  # base, experts and router stages
    return model, seconds, manifest["eval"]["heldout_bpb"] if builtin else None


def score(model: nn.Module, records: Sources, base: Collection[str] = ()) -> dict:
    """Bits per byte per source, of the expert sources pooled and of all sources pooled (bytes-weighted)."""
    return pooled({s: bits_per_byte(model, recs) for s, recs in records.items()}, records, base)


def pooled(bpb: dict[str, float], records: Sources, base: Collection[str] = ()) -> dict:
    """Per-source bits per byte, their bytes-weighted mean over the expert sources' records (`mixture_bpb`,
    the headline) and over every source's, base ones included (`all_bpb`)."""
    size = {s: sum(len(r.text.encode("utf-8")) for r in recs) for s, recs in records.items()}

    def mean(sources: list[str]) -> float:
        return sum(bpb[s] * size[s] for s in sources) / sum(size[s] for s in sources)

    return {"heldout_bpb": bpb, "mixture_bpb": mean([s for s in bpb if s not in base]), "all_bpb": mean(list(bpb))}


def rule_text(settings: dict) -> str:
    """A mixing rule in a few words, from `MixtureOfExperts.settings`."""
    if settings["rule"] == "router":
        return f"router top-{settings['top_k']}"
    return f"posterior, keep {settings['keep']}"


def bench_method(method: str, cfg: Config, args, work: Path, console: Console) -> list[dict]:
    """One method: choose its lr on the validation split (with a grid), retrain on all training records,
    score on the test records. Ours gives a row per mixing rule and the own-expert diagnostic."""
    grid = {}
    if len(args.lrs) > 1:
        fit, val = carve(args.train, cfg.seed, args.val_fraction)
        for lr in args.lrs:
            console.print(f"[bold]{method}[/], lr {lr:g}: training on the fit split")
            model = train(method, cfg, lr, fit, False, work, args, console)[0]
            grid[lr] = score(model, val, args.base)["mixture_bpb"]
            console.print(f"  validation mixture {grid[lr]:.4f} bits/byte")
    lr = min(grid, key=grid.get) if grid else (args.lrs or [cfg.train.expert.lr])[0]
    console.print(f"[bold]{method}[/], lr {lr:g}: training on all training records")
    model, seconds, project = train(method, cfg, lr, args.train, not args.data, work, args, console)
    calls = jobs(method, cfg, lr, args.train, args.base)
    row = {
        "method": method,
        "lr": lr,
        "validation_mixture_bpb": {f"{k:g}": round(v, 4) for k, v in grid.items()},
        "params": params(model),
        "bytes_seen": sum(bytes_seen(*call) for call in calls),
        "train_records": sum(len(records) for _, _, records in calls),
        "train_seconds": round(seconds, 1),
    }

    def scored(name: str, scorer: nn.Module, active: int, **extra) -> dict:
        out = {"model": name, **row, "active_params": active, **extra, **score(scorer, args.test, args.base)}
        console.print(f"  {name}: held-out mixture {out['mixture_bpb']:.4f} bits/byte (all {out['all_bpb']:.4f})")
        return out

    if method != "ours":
        first = model.models[0].cfg
        row["shape"] = {"n_layer": first.n_layer, "d_model": first.d_model}
        return [scored(LABELS.get(method, method), model, params(model))]
    one, routing = expert_params(cfg.model.expert), params(model.router)
    has_base, on_base = model.base is not None, isinstance(model.router, FeatureRouter)
    names = model.names[: len(model.experts)]
    active = active_models(model.mixing, model.top_k, len(names), has_base, on_base) * one + routing
    rows = [scored(f"ours ({rule_text(model.settings)})", model, active, headline=True, mixing=model.settings)]
    if project:  # `train` scored the same records itself: a check on the split
        off = max(abs(rows[-1]["heldout_bpb"][s] - project[s]) for s in project)
        colour = "green" if off < 1e-3 else "red"
        console.print(f"  [{colour}]largest difference from the project's own evaluation: {off:.5f}[/]")
    for k in (1, 2):
        if k > len(names) or (model.mixing.rule == "router" and k == model.top_k):  # no such rule, or the headline
            continue
        rule = MixingConfig(rule="router")
        routed = MixtureOfExperts(
            experts=dict(zip(names, model.experts, strict=True)),
            router=model.router,
            top_k=k,
            mixing=rule,
            base=model.base,
        ).eval()
        rows.append(scored(f"ours, router top-{k}", routed, (k + on_base) * one + routing, mixing=routed.settings))
    # Diagnostic, not a model one can deploy: each source scored by its own expert (routing told the source).
    mapping = expert_map(cfg)
    own = {
        s: Ensemble([model.base if s in args.base else model.experts[names.index(mapping.get(s, s))]]).eval()
        for s in args.test
    }
    per = {s: bits_per_byte(own[s], records) for s, records in args.test.items()}
    rows.append(
        {"model": "ours, own expert (no router)", **row, "active_params": one, **pooled(per, args.test, args.base)}
    )
    console.print(f"  {rows[-1]['model']}: held-out mixture {rows[-1]['mixture_bpb']:.4f} bits/byte")
    return rows


# (baseline row, the target's words, bound on ours / baseline; None: reported beside, no target)
TARGETS = (
    ("dense-matched", "{ours} within 10% of {baseline}", 1.10),
    ("sisa", "{ours} at least 10% better than {baseline}", 0.9),
    ("sisa from base", "{ours} against {baseline} (beside sisa, no target)", None),
)


def targets(rows: list[dict]) -> list[dict]:
    """The issue's targets on mixture bits per byte (expert sources) of ours with the config's mixing (the
    headline row): within 10% of dense-matched, at least 10% better than sisa; sisa from base beside."""
    by = {r["model"]: r["mixture_bpb"] for r in rows}
    headline = next((r for r in rows if r.get("headline")), None)
    out = []
    for baseline, words, bound in TARGETS:
        if headline is not None and baseline in by:  # both were run (--methods, base sources)
            ours = headline["mixture_bpb"]
            out.append(
                {
                    "target": words.format(ours=headline["model"], baseline=baseline),
                    "ours": ours,
                    "baseline": by[baseline],
                    "change": ours / by[baseline] - 1,
                    "bound": bound,
                    "met": None if bound is None else ours <= bound * by[baseline],
                }
            )
    return out


def markdown(report: dict) -> str:
    c, rows, base = report["config"], report["rows"], report["config"]["base_sources"]
    sources = [s for s in rows[0]["heldout_bpb"] if s not in base] + [s for s in rows[0]["heldout_bpb"] if s in base]
    lr_note = (
        f"lr grid {', '.join(f'{lr:g}' for lr in report['lrs'])} per model, chosen on a "
        f"{report['val_fraction']:.0%} validation split of the training records"
        if len(report["lrs"]) > 1
        else f"lr {rows[0]['lr']:g} for every model, no lr grid" + (" (--quick)" if report["quick"] else "")
    )
    base_note = (
        f" + {len(base)} base source{'s' * (len(base) > 1)} ({c['base_records']:,} of the training records; "
        f"base max_epochs {c['base_max_epochs']}, max_steps {c['base_max_steps']}, frozen {c['frozen'] or 'none'})"
        if base
        else ", no base sources"
    )
    lines = [
        machine_line(report["machine"]),
        f"- Date: {report['date']}",
        f"- Config: {report['config_file']} + `{' '.join(report['overrides']) or '(no overrides)'}`: "
        f"{c['corpus']} corpus, {c['domains'] - len(base)} expert sources{base_note}, "
        f"{c['train_records']:,} training records, {c['test_records']} held-out test records, "
        f"expert n_layer {c['n_layer']} d_model {c['d_model']} block {c['block_size']}, max_epochs {c['max_epochs']}, "
        f"max_steps {c['max_steps']}, batch {c['batch_size']}; mixing {c['mixing']}, router on "
        f"{'the base features' if c.get('router_reads_base') else 'bytes'}; {lr_note}",
        f"- Command: `{report['command']}`",
        "",
        "| model | params | active | lr | bytes seen | train s | "
        + " | ".join(f"{s} (base)" if s in base else s for s in sources)
        + " | mixture |"
        + (" all |" if base else "")
        + " vs ours |",
        "|---" * (len(sources) + 8 + bool(base)) + "|",
    ]
    ours = next((r for r in rows if r.get("headline")), rows[0])["mixture_bpb"]  # ours, unless --methods left it out
    for r in rows:
        shape = f" ({r['shape']['n_layer']}x{r['shape']['d_model']})" if "shape" in r else ""
        per = " | ".join(f"{r['heldout_bpb'][s]:.4f}" for s in sources)
        val = ", ".join(f"{lr}: {bpb:.3f}" for lr, bpb in r["validation_mixture_bpb"].items())
        lr = f"{r['lr']:g}" + (f" (validation {val})" if val else "")
        every = f" {r['all_bpb']:.4f} |" if base else ""
        lines.append(
            f"| {r['model']}{shape} | {r['params']:,} | {r['active_params']:,} | {lr} | {r['bytes_seen']:,} | "
            f"{r['train_seconds']} | {per} | **{r['mixture_bpb']:.4f}** |{every} {r['mixture_bpb'] / ours - 1:+.1%} |"
        )
    lines += [
        "",
        "Held-out bits per byte (lower is better); mixture: the expert sources' held-out records pooled "
        "(bytes-weighted)" + ("; all: every source's, base ones included" if base else "") + ". "
        f"Ours ({c['mixing']}): the composed model as `moe-unlearn train` builds it"
        + (", its experts branched from the base trained on the base sources" if base else "")
        + ", mixed by the config's rule; ours, router top-k: the same trained model scored with the router's "
        "top-k"
        + (" (the base not mixed)" if base else "")
        + ". Ours, own expert (no router): each source scored by its own expert alone"
        + (" (base sources by the base)" if base else "")
        + ", as if the router were told the source: not a model one can serve, it shows what the mixing costs. "
        "Dense-matched: one transformer with about as many parameters as ours in all"
        + (" (base, experts, router)" if base else " (experts, router)")
        + "; dense-active: one with about the parameters ours runs per byte (active); both train on every "
        "training record. Sisa: K expert-size models from scratch, each on a seeded 1/K shard of every training "
        "record, probabilities averaged"
        + (
            "; sisa from base: ours' base (same records and lr), then K models branched from it, each on a 1/K "
            "shard of the expert sources' records"
            if base
            else ""
        )
        + ". Params: all parameters (ours: base, experts, router); active: those one byte runs through (ours "
        "posterior: `keep` candidates after pruning, before it every candidate"
        + (
            "; plus the base, which a router on its features runs on every byte, unless kept"
            if c.get("router_reads_base")
            else ""
        )
        + "). Bytes seen: the bytes (no "
        "padding) of the batches each model trained on, over all its models, the base's included; ours also "
        "trains its router stages on record prefixes. Train s: wall time of the training calls (ours: base, "
        "experts and router stages, from the manifest; sisa from base: its base's too, reused or not). "
        "vs ours: mixture relative to the first row.",
        "",
        "| target | ours | baseline | ours vs baseline | met |",
        "|---|---|---|---|---|",
    ]
    for t in report["targets"]:
        met = "beside" if t["met"] is None else "pass" if t["met"] else "FAIL"
        lines.append(f"| {t['target']} | {t['ours']:.4f} | {t['baseline']:.4f} | {t['change']:+.1%} | {met} |")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    from matplotlib.figure import Figure  # object API: Agg, no pyplot state

    rows, base = report["rows"], report["config"]["base_sources"]
    sources = sorted(rows[0]["heldout_bpb"], key=lambda s: s in base)  # as the table: expert sources first
    groups = [*sources, "mixture", *(["all"] if base else [])]
    width = 0.8 / len(rows)
    figure = Figure(figsize=(max(8, 1.6 * len(groups)), 4.5), layout="constrained")
    ax = figure.subplots()
    for i, r in enumerate(rows):
        values = [*(r["heldout_bpb"][s] for s in sources), r["mixture_bpb"], *([r["all_bpb"]] if base else [])]
        ax.bar([g + i * width for g in range(len(groups))], values, width, label=r["model"])
    labels = [f"{g}\n(base)" if g in base else g for g in groups]
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], labels)
    ax.set_ylabel("held-out bits per byte (lower is better)")
    ax.set_title(f"Held-out bits per byte, same bytes seen ({report['date'][:10]})")
    figure.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=3, fontsize="small")
    save_figure(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{' '.join(QUICK)}, the config's lr only")
    parser.add_argument("--lrs", type=float, nargs="*", help="expert lr grid (default 1e-3 2e-3 4e-3; --quick: none)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="models to train")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="validation share for choosing the lr")
    parser.add_argument(
        "--base-sources",
        nargs="*",
        choices=DICTD,
        help=f"with --data: dictd sources ingested with role base (default {' '.join(DICTD_BASE)}); the "
        "built-in corpus takes its base sources from data.corpus.base_domains",
    )
    report_options(parser, "utility")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data.corpus.domains=8")
    args = parser.parse_args()
    if args.base_sources is not None and not args.data:
        parser.error("--base-sources needs --data (the built-in corpus: data.corpus.base_domains=N)")
    console = Console(stderr=True)
    suffix = report_defaults(args, "utility")
    quick = (QUICK_DICTD if args.data else QUICK) if args.quick else []
    head = ["trainer.progress_bar=false", *quick]
    cfg = load_config(args.config, [*head, *args.overrides])
    if args.data:
        args.base = tuple(DICTD_BASE if args.base_sources is None else args.base_sources)
        if args.base:  # the dictd config sets only the experts' budget: the base trains the same, unless overridden
            e = cfg.train.expert
            head += [f"train.base.max_epochs={e.max_epochs}", f"train.base.max_steps={e.max_steps}"]
    else:
        args.base = base_corpus_domains(cfg.data.corpus.domains, cfg.data.corpus.base_domains)
    args.overrides = [*head, *args.overrides]
    args.lrs = args.lrs if args.lrs is not None else ([] if args.quick else GRID)
    args.bases = {}  # (lr, record ids) -> (base tensors, seconds), shared by ours and sisa from base
    cfg = load_config(args.config, args.overrides)
    configure_torch(cfg)
    args.train, args.test = corpus(args.config, args.overrides, args.data, args.base)
    methods = [m for m in args.methods if m != "sisa-from-base" or args.base]
    if len(methods) < len(args.methods):
        console.print("[yellow]no base sources: sisa-from-base left out[/]")

    rows = []
    with tempfile.TemporaryDirectory(prefix="moe-unlearn-utility-") as tmp:
        for method in methods:
            rows += bench_method(method, cfg, args, Path(tmp), console)
            partial = args.out.with_suffix(".partial.json")  # what a run cut short still leaves
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps({"overrides": args.overrides, "lrs": args.lrs, "rows": rows}, indent=2))
    e = cfg.model.expert
    report = {
        **provenance(args.config),
        "overrides": args.overrides,
        "config": {
            "domains": len(args.train),
            "corpus": f"dictd ({args.data})" if args.data else "built-in",
            "base_sources": list(args.base),
            "base_records": sum(len(args.train[s]) for s in args.base),
            "train_records": sum(len(r) for r in args.train.values()),
            "test_records": sum(len(r) for r in args.test.values()),
            "n_layer": e.n_layer,
            "d_model": e.d_model,
            "block_size": e.block_size,
            "max_epochs": cfg.train.expert.max_epochs,
            "max_steps": cfg.train.expert.max_steps,
            "base_max_epochs": cfg.train.base.max_epochs,
            "base_max_steps": cfg.train.base.max_steps,
            "frozen": list(cfg.train.frozen),
            "batch_size": cfg.train.expert.batch_size,
            "router_reads_base": reads_base(cfg, bool(args.base)),
            "mixing": rule_text(mixing_settings(cfg.model.mixing, cfg.model.router.top_k, has_base=bool(args.base))),
        },
        "quick": args.quick,
        "lrs": args.lrs,
        "val_fraction": args.val_fraction,
        "rows": rows,
        "targets": targets(rows),
    }
    for t in report["targets"]:
        word, colour = ("beside", "cyan") if t["met"] is None else ("pass", "green") if t["met"] else ("FAIL", "red")
        console.print(f"[{colour}]{word}[/]: {t['target']} ({t['change']:+.1%})")
    publish(report, markdown(report), args.out, plot, args.plots / f"utility{suffix}.png", console)
    args.out.with_suffix(".partial.json").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
