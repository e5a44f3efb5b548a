"""Who trains on what: every file of a version as a `Job` with its *lineage*.

The lineage of an artefact (the base, an expert, a router stage) is the hash of the config, its name
and position, the ids of the records it trains on, for an expert the lineage of the base it branches
from (when there is one) and, for stage i, the lineage of stage i-1. A file of the
served version whose lineage matches is reused byte for byte by the next build; any other is trained
from its seeded initialisation. Training from scratch and rebuilding after a change therefore give the
same files.
"""

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from moe_unlearn.config import Config, config_hash
from moe_unlearn.data.records import Record
from moe_unlearn.data.splits import ids_digest, replay_sample, split
from moe_unlearn.errors import UserError
from moe_unlearn.rundir import BASE_FILE, expert_file, features_file, stage_file
from moe_unlearn.storage.builds import served_files
from moe_unlearn.storage.registry import BASE, Registry
from moe_unlearn.training.features import LAYOUT


@dataclass
class Job:
    """One file of a version and everything needed to (re)produce it."""

    path: str  # relative to the version directory
    kind: str  # "base", "expert" or "router-stage"
    expert: str
    stage: int | None
    records: list[Record]
    labels: list[int] = field(default_factory=list)  # router stages: expert index of each record
    lineage: str = ""


def plan(registry: Registry, cfg: Config) -> tuple[list[Job], dict[str, list[Record]]]:
    """Jobs in build order (the base if the registry has base sources, experts, the base features of
    each expert's records when the router reads them, then router stages 0..K-1) and the held-out records per source
    to report on (the first `data.eval_records` by id whose text no expert trains on: a held-out copy
    of a duplicated record, such as a canary, is not unseen text)."""
    experts = registry.experts()
    if not experts:
        raise UserError("the registry has no sources: ingest some (moe-unlearn ingest --source NAME FILES...)")
    chash = config_hash(cfg)
    train_sets, held_out = {}, {}
    base_sources = registry.base_sources()
    for name in ([BASE] if base_sources else []) + experts:
        sources = registry.sources_of(name)
        records = registry.records(sources)
        train_sets[name], held = split(records, cfg.seed, cfg.data.heldout_fraction)
        if not train_sets[name] and name == BASE:
            raise UserError(f"the base model would have no training records: sources {base_sources} hold none")
        if not train_sets[name]:
            raise UserError(
                f"expert {name!r} would have no training records (all held out or forgotten): "
                f"drop it instead (moe-unlearn drop --expert {name})"
            )
        for s in sources:
            held_out[s] = [r for r in held if r.source == s]
    trained_texts = {r.text for records in train_sets.values() for r in records}
    unseen = {s: [r for r in held if r.text not in trained_texts] for s, held in held_out.items()}
    heldout = {s: records[: cfg.data.eval_records] for s, records in unseen.items()}
    base = []
    if base_sources:
        records = train_sets[BASE]
        base = [Job(BASE_FILE, "base", BASE, None, records)]
        base[0].lineage = lineage(kind="base", config=chash, records=ids_digest(r.id for r in records))
    jobs = [Job(expert_file(e), "expert", e, None, train_sets[e]) for e in experts]
    for job in jobs:
        branch = {"base": base[0].lineage} if base else {}  # no base: the lineage of the first design
        job.lineage = lineage(
            kind="expert", expert=job.expert, config=chash, records=ids_digest(r.id for r in job.records), **branch
        )
    features = []
    if reads_base(cfg, bool(base)):
        for e in experts:
            job = Job(features_file(e), "router-features", e, None, train_sets[e])
            job.lineage = lineage(
                kind="router-features",
                expert=e,
                base=base[0].lineage,
                layout=LAYOUT,
                records=ids_digest(r.id for r in job.records),
            )
            features.append(job)
    stages = _router_jobs(cfg, experts, train_sets, chash, base[0].lineage if features else None)
    return base + jobs + features + stages, heldout


def reads_base(cfg: Config, has_base: bool) -> bool:
    """Whether the router is a head on the base's features (model.router.features, auto: with a base)."""
    wanted = cfg.model.router.features
    if wanted == "base" and not has_base:
        raise UserError("model.router.features=base needs base sources (ingest --role base); there are none")
    return wanted == "base" or (wanted == "auto" and has_base)


def _router_jobs(
    cfg: Config, experts: list[str], train_sets: dict[str, list[Record]], chash: str, base: str | None
) -> list[Job]:
    """Stage i: expert i's records (or a sample) plus a replay sample of each earlier expert's; with
    `base` (the base's lineage) the stages read its features."""
    jobs, previous = [], ""
    opt = cfg.train.router
    for i, name in enumerate(experts):
        own = replay_sample(train_sets[name], cfg.seed, opt.stage_records) if opt.stage_records else train_sets[name]
        records, labels = list(own), [i] * len(own)
        for j, earlier in enumerate(experts[:i]):
            replay = replay_sample(train_sets[earlier], cfg.seed, math.ceil(opt.replay_records / i))
            records += replay
            labels += [j] * len(replay)
        job = Job(stage_file(i), "router-stage", name, i, records, labels)
        # No base: the lineage of the first design. A head on base features records its loss weighting and
        # batch size and step floor (stages trained before these existed are retrained, not reused).
        features = {"features": base, "layout": LAYOUT, "balance": opt.balanced(True), "batch": opt.head_batch_size}
        features["min_steps"] = opt.head_min_steps
        features = features if base else {}
        job.lineage = previous = lineage(
            **features,
            kind="router-stage",
            stage=i,
            expert=name,
            config=chash,
            previous=previous,
            records=ids_digest(f"{r.id}@{label}" for r, label in zip(records, labels, strict=True)),
        )
        jobs.append(job)
    return jobs


def changes(run_dir: Path, registry: Registry, cfg: Config) -> list[Job]:
    """The jobs a build would train now (those whose lineage the served version lacks)."""
    jobs, _ = plan(registry, cfg)
    _, served = served_files(run_dir)
    return [j for j in jobs if served["files"].get(j.path, {}).get("lineage") != j.lineage]


def check_expert_map(registry: Registry, cfg: Config) -> None:
    """The config's source -> expert map and base sources must agree with the registry's (the registry
    is the truth)."""
    current = registry.source_map()
    for source in cfg.data.base_sources:
        if source in current and current[source] != BASE:
            raise UserError(
                f"data.base_sources names {source!r}, an expert source in the registry: a source's role is set when "
                f"it is first ingested (moe-unlearn ingest --role base --source {source} ...) into a new run directory"
            )
    for spec in cfg.experts:
        for source in spec.sources:
            if source not in current:
                raise UserError(f"experts: source {source!r} (expert {spec.name!r}) is not in the registry")
            if current[source] != spec.name:
                raise UserError(
                    f"experts: source {source!r} belongs to expert {current[source]!r} in the registry, "
                    f"not {spec.name!r}"
                )


def lineage(**fields: object) -> str:
    """The hash that identifies how an artefact was made (see the module docstring)."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
