"""Build a model version: plan every artefact's lineage, reuse what is unchanged, train the rest.

Every artefact (an expert, a router stage) has a *lineage*: the hash of the config, its name and
position, the ids of the records it trains on and, for stage i, the lineage of stage i-1. An artefact
of the serving version whose lineage matches is reused byte for byte; any other is trained from its
seeded initialisation. Training from scratch and rebuilding after a change therefore give the same
files. The new version is built beside the old one and goes live with an atomic switch of `current`.
"""

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console

from moe_unlearn.config import Config, config_from_yaml, config_hash, to_yaml
from moe_unlearn.data.records import Record
from moe_unlearn.data.splits import ids_digest, is_heldout, replay_sample, split
from moe_unlearn.errors import UserError
from moe_unlearn.faults import crash_point
from moe_unlearn.models.expert import ByteTransformer
from moe_unlearn.models.moe import MixtureOfExperts
from moe_unlearn.models.router import Router
from moe_unlearn.storage.registry import Registry, now
from moe_unlearn.storage.versions import (
    VERSIONS_DIR,
    environment,
    load_tensors,
    read_current,
    read_manifest,
    save_tensors,
    switch_current,
    version_dir,
    write_file,
    write_manifest,
)
from moe_unlearn.training.distributed import is_primary
from moe_unlearn.training.evaluate import evaluate

Tensors = dict[str, torch.Tensor]
CONFIG_FILE = "config.yaml"
PROGRESS_FILE = "progress.json"  # files finished so far by a build that has not gone live yet


@dataclass
class Job:
    """One file of a version and everything needed to (re)produce it."""

    path: str  # relative to the version directory
    kind: str  # "expert" or "router-stage"
    expert: str
    stage: int | None
    records: list[Record]
    labels: list[int] = field(default_factory=list)  # router stages: expert index of each record
    lineage: str = ""


def plan(registry: Registry, cfg: Config) -> tuple[list[Job], dict[str, list[Record]]]:
    """Jobs in build order (experts, then router stages 0..K-1) and the held-out records per source
    to report on (the first `data.eval_records` by id whose text no expert trains on: a held-out copy
    of a duplicated record, such as a canary, is not unseen text)."""
    experts = registry.experts()
    if not experts:
        raise UserError("the registry has no sources: ingest some (moe-unlearn ingest --source NAME FILES...)")
    chash = config_hash(cfg)
    train_sets, held_out = {}, {}
    for name in experts:
        sources = registry.sources_of(name)
        records = registry.records(sources)
        train_sets[name], held = split(records, cfg.seed, cfg.data.heldout_fraction)
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
    jobs = [Job(f"experts/{e}.safetensors", "expert", e, None, train_sets[e]) for e in experts]
    for job in jobs:
        job.lineage = _lineage(
            kind="expert", expert=job.expert, config=chash, records=ids_digest(r.id for r in job.records)
        )
    previous = ""
    opt = cfg.train.router
    for i, name in enumerate(experts):
        own = replay_sample(train_sets[name], cfg.seed, opt.stage_records) if opt.stage_records else train_sets[name]
        records, labels = list(own), [i] * len(own)
        for j, earlier in enumerate(experts[:i]):
            replay = replay_sample(train_sets[earlier], cfg.seed, math.ceil(opt.replay_records / i))
            records += replay
            labels += [j] * len(replay)
        job = Job(f"router/stage_{i}.safetensors", "router-stage", name, i, records, labels)
        job.lineage = previous = _lineage(
            kind="router-stage",
            stage=i,
            expert=name,
            config=chash,
            previous=previous,
            records=ids_digest(f"{r.id}@{label}" for r, label in zip(records, labels, strict=True)),
        )
        jobs.append(job)
    return jobs, heldout


def changes(run_dir: Path, registry: Registry, cfg: Config) -> list[Job]:
    """The jobs a build would train now (those whose lineage the served version lacks)."""
    jobs, _ = plan(registry, cfg)
    current = read_current(run_dir)
    old = read_manifest(version_dir(run_dir, current))["files"] if current is not None else {}
    return [j for j in jobs if old.get(j.path, {}).get("lineage") != j.lineage]


def build_version(
    run_dir: Path,
    registry: Registry,
    cfg: Config,
    only: list[str] | None = None,
    console: Console | None = None,
    keep_logs: bool = True,
    evaluate_heldout: bool = True,
    before_switch: Callable[[int], None] | None = None,
) -> dict:
    """Train what changed into versions/<n+1>, switch `current` to it, delete older versions.
    Returns the new manifest (or the current one, unchanged, when nothing needs training).
    `evaluate_heldout=False` leaves the manifest's `eval` empty (reporting only; see `evaluate`).
    `before_switch(n)` runs when version n is complete but not yet served (the audit's moment).

    A build interrupted by a crash is picked up where it stopped: files it finished (listed in the
    unfinished version's progress file, sha256 checked) are kept when their lineage still matches.

    `only` (train.experts) trains those experts even when unchanged. When other experts have no
    weights here either (experts trained on separate machines), only the `only` experts are trained,
    into the unfinished build, and nothing goes live: `expert export`/`import` (training/bundles.py)
    move them, and a build without `only` trains what is left. Returns the build's progress then."""
    # Lightning (seconds to import) is loaded only when something trains: serving, scoring and the
    # audit read versions through this module without it.
    from moe_unlearn.training.trainer import configure_torch

    console = console or Console(stderr=True)
    configure_torch(cfg)
    experts, source_map = registry.experts(), registry.source_map()  # one snapshot for the whole build
    jobs, heldout = plan(registry, cfg)
    unknown = sorted(set(only or []) - set(experts))
    if unknown:
        raise UserError(f"train.experts names unknown experts {unknown}; the registry has {experts}")
    current = read_current(run_dir)
    old = read_manifest(version_dir(run_dir, current)) if current is not None else {"files": {}}
    old_dir = version_dir(run_dir, current) if current is not None else None
    reusable = {
        j.path
        for j in jobs
        if old["files"].get(j.path, {}).get("lineage") == j.lineage
        and not (only and j.expert in only and j.kind == "expert")
    }
    if current is not None and len(reusable) == len(jobs) and old.get("experts") == experts:
        console.print(f"Version {current} is up to date: nothing to train.")
        return old

    # With several processes (DDP) only global rank 0 writes; the others plan the same build from the
    # same registry and files and take part in its fits (training/distributed.py).
    primary = is_primary(cfg)
    if primary:
        registry.remove_versions_after(current)  # rows of builds that never went live
    n, done = unfinished_build(run_dir, current, cfg)
    vdir = start_build(run_dir, n, cfg, continued=bool(done)) if primary else version_dir(run_dir, n)
    log_dir = vdir / "logs"
    finished = {j.path for j in jobs if done.get(j.path, {}).get("lineage") == j.lineage and j.path not in reusable}
    unbuilt = [j.expert for j in jobs if j.kind == "expert" and j.path not in reusable | finished]
    missing = [e for e in unbuilt if only and e not in only]
    if missing:  # a share of the experts, the rest trained elsewhere: train ours, go live later
        jobs = [j for j in jobs if j.kind == "expert" and j.expert in only]

    files, state = {}, {}
    previous_stage: tuple[Tensors, Tensors] | None = None
    todo = [j for j in jobs if j.path not in reusable and j.path not in finished]
    if not primary:
        stored = {p: (old_dir / p, old["files"][p]["sha256"]) for p in reusable}
        stored |= {p: (vdir / p, done[p]["sha256"]) for p in finished}
        return _take_part(cfg, jobs, {j.path for j in todo}, stored, log_dir)
    env, step = environment(), 0
    for job in jobs:
        started = time.perf_counter()
        if job.path in reusable or job.path in finished:
            entry = dict(old["files"][job.path]) if job.path in reusable else done[job.path]
            if job.path in reusable:
                (vdir / job.path).unlink(missing_ok=True)
                _link(old_dir / job.path, vdir / job.path)
            tensors = load_tensors(vdir / job.path, entry["sha256"]) if job.kind == "router-stage" else None
            if job.kind == "expert":
                state[job.expert] = lambda p=vdir / job.path, s=entry["sha256"]: load_tensors(p, s)
        else:
            step += 1
            console.print(
                f"[bold]\\[{step}/{len(todo)}][/] training {job.kind} [cyan]{job.expert}[/]"
                + (f" (stage {job.stage})" if job.stage is not None else "")
                + f" on {len(job.records):,} records"
            )
            tensors = _train(cfg, job, previous_stage, log_dir)
            entry = {
                "sha256": save_tensors(vdir / job.path, tensors),
                "lineage": job.lineage,
                "kind": job.kind,
                "expert": job.expert,
                "stage": job.stage,
                "records": len(job.records),
                "records_sha256": ids_digest(r.id for r in job.records),
                "config_sha256": config_hash(cfg),
                "environment": env,  # per file: an imported expert keeps the one it was trained in
                "trained_in_version": n,
                "train_seconds": round(time.perf_counter() - started, 2),
            }
            done[job.path] = entry
            _write_json(vdir / PROGRESS_FILE, done)
            if job.kind == "expert":
                state[job.expert] = lambda t=tensors: t
        if job.kind == "router-stage":
            previous_stage = split_stage(tensors)
        files[job.path] = entry
    if missing:
        console.print(
            f"trained {len(todo)} files into version {n}, not live: experts {missing} have no weights here "
            "(`moe-unlearn expert export` / `expert import` move experts between run directories)"
        )
        return {
            "version": n,
            "live": False,
            "trained": [j.path for j in todo],
            "remaining": remaining(run_dir, registry, cfg),
        }

    ev = None
    if evaluate_heldout:
        console.print("evaluating on held-out records ...")
        ev = evaluate(compose(cfg, {e: state[e]() for e in experts}, previous_stage[0]), heldout, source_map)
    manifest = {
        "version": n,
        "parent": current,
        "created": now(),
        "config_sha256": config_hash(cfg),
        "config_file_sha256": hashlib.sha256((vdir / CONFIG_FILE).read_bytes()).hexdigest(),
        "environment": environment(),
        "experts": experts,
        "sources": source_map,
        "top_k": cfg.model.router.top_k,
        "files": files,
        "trained": [path for path, e in files.items() if e["trained_in_version"] == n],
        "eval": ev,
        "method": "exact",
    }
    return _go_live(run_dir, registry, n, manifest, None if keep_logs else log_dir, before_switch)


def build_approximate_version(
    run_dir: Path,
    registry: Registry,
    cfg: Config,
    method: str,
    forgotten: list[Record],
    console: Console,
    before_switch: Callable[[int], None] | None = None,
) -> dict:
    """An approximate forget, for contrast with the exact one: each expert that trained on `forgotten`
    gets `method` (gradient ascent, nabla-tau) applied to its current weights; every other file,
    router stages included, is kept. The manifest says `method` and the lineage of the changed experts
    matches nothing, so the next exact build retrains them (and the stale router stages) from scratch."""
    from moe_unlearn.training.trainer import configure_torch
    from moe_unlearn.unlearning.approximate import unlearn_expert  # the unlearning layer builds on this one

    configure_torch(cfg)
    current = read_current(run_dir)
    old_dir = version_dir(run_dir, current)
    old = read_manifest(old_dir)
    source_map = registry.source_map()
    trained_on = [r for r in forgotten if not is_heldout(r.id, cfg.seed, cfg.data.heldout_fraction)]
    affected = [e for e in old["experts"] if any(source_map.get(r.source) == e for r in trained_on)]
    if not affected:
        console.print("the forgotten records were never trained on: nothing to unlearn")
        return old
    n = max([current, *_version_numbers(run_dir)]) + 1
    vdir = version_dir(run_dir, n)
    shutil.rmtree(vdir, ignore_errors=True)
    (vdir / "experts").mkdir(parents=True)
    (vdir / "router").mkdir()
    shutil.copy2(old_dir / CONFIG_FILE, vdir / CONFIG_FILE)
    files = {}
    for path, entry in old["files"].items():
        expert = path.removeprefix("experts/").removesuffix(".safetensors")
        if path.startswith("experts/") and expert in affected:
            started = time.perf_counter()
            console.print(f"{method}: unlearning in expert [cyan]{expert}[/] (approximate)")
            sources = registry.sources_of(expert)
            retain, heldout = split(registry.records(sources), cfg.seed, cfg.data.heldout_fraction)
            forget = [r for r in trained_on if r.source in sources]
            weights = load_tensors(old_dir / path, entry["sha256"])
            tensors = unlearn_expert(cfg, expert, weights, method, forget, retain, heldout, vdir / "logs")
            files[path] = {
                **entry,
                "sha256": save_tensors(vdir / path, tensors),
                "lineage": _lineage(
                    kind="approximate", method=method, base=entry["lineage"], forget=ids_digest(r.id for r in forget)
                ),
                "method": method,
                "trained_in_version": n,
                "train_seconds": round(time.perf_counter() - started, 2),
            }
        else:
            _link(old_dir / path, vdir / path)
            files[path] = entry
    manifest = {
        **old,
        "version": n,
        "parent": current,
        "created": now(),
        "config_file_sha256": hashlib.sha256((vdir / CONFIG_FILE).read_bytes()).hexdigest(),
        "environment": environment(),
        "files": files,
        "trained": [f"experts/{e}.safetensors" for e in affected],
        "eval": None,
        "method": method,
    }
    return _go_live(run_dir, registry, n, manifest, vdir / "logs", before_switch)


def _go_live(
    run_dir: Path,
    registry: Registry,
    n: int,
    manifest: dict,
    remove: Path | None,
    before_switch: Callable[[int], None] | None,
) -> dict:
    """Write the manifest, record the version, let `before_switch` look at it, switch, clean up."""
    vdir = version_dir(run_dir, n)
    write_manifest(vdir, manifest)
    if remove is not None:
        shutil.rmtree(remove, ignore_errors=True)
    with registry.transaction():
        registry.add_version(n, manifest)
    if before_switch is not None:
        before_switch(n)
    crash_point("before-switch")
    switch_current(run_dir, n)
    crash_point("after-switch")
    (vdir / PROGRESS_FILE).unlink(missing_ok=True)
    remove_other_versions(run_dir, keep=n)
    return manifest


def compose(cfg: Config, experts: dict[str, Tensors], router_weights: Tensors) -> MixtureOfExperts:
    """The composed model from tensors (expert name -> state dict, final router stage)."""
    modules = {}
    for name, tensors in experts.items():
        modules[name] = ByteTransformer(cfg.model.expert)
        modules[name].load_state_dict(tensors)
    router = Router(cfg.model.router, n_experts=len(experts))
    router.load_state_dict(router_weights)
    return MixtureOfExperts(experts=modules, router=router, top_k=cfg.model.router.top_k).eval()


def remove_other_versions(run_dir: Path, keep: int) -> None:
    for v in _version_numbers(run_dir):
        if v != keep:
            shutil.rmtree(version_dir(run_dir, v), ignore_errors=True)


def split_stage(tensors: Tensors) -> tuple[Tensors, Tensors]:
    """A router stage file's tensors -> (router weights, accumulated Fisher)."""
    weights = {k.removeprefix("router."): v for k, v in tensors.items() if k.startswith("router.")}
    fisher = {k.removeprefix("fisher."): v for k, v in tensors.items() if k.startswith("fisher.")}
    return weights, fisher


def _train(cfg: Config, job: Job, previous_stage: tuple[Tensors, Tensors] | None, log_dir: Path) -> Tensors:
    """Train one file of a version: an expert, or a router stage (weights and Fisher) from the previous one."""
    from moe_unlearn.training.trainer import train_expert, train_router_stage

    if job.kind == "expert":
        return train_expert(cfg, job.expert, job.records, log_dir)
    weights, fisher = train_router_stage(cfg, job.stage, job.expert, previous_stage, job.records, job.labels, log_dir)
    return {**{f"router.{k}": v for k, v in weights.items()}, **{f"fisher.{k}": v for k, v in fisher.items()}}


def _take_part(
    cfg: Config, jobs: list[Job], todo: set[str], stored: dict[str, tuple[Path, str]], log_dir: Path
) -> dict:
    """A DDP follower's share of a build: the fits of the `todo` paths, each router stage from the same
    previous stage as on rank 0 (trained here, or read from `stored`: path -> (file, sha256)). Writes
    nothing (Lightning logs on rank 0 only) and returns {}."""
    previous_stage = None
    for job in jobs:
        if job.path in todo:
            tensors = _train(cfg, job, previous_stage, log_dir)
        elif job.kind == "router-stage":
            tensors = load_tensors(*stored[job.path])
        if job.kind == "router-stage":
            previous_stage = split_stage(tensors)
    return {}


def unfinished_build(run_dir: Path, current: int | None, cfg: Config) -> tuple[int, dict]:
    """(version number to build, files already finished in it): an unfinished build of the same config
    hash (left by a crash, by `train.experts` naming a share of the experts, or by `expert import`) is
    continued, otherwise a new number after every one used so far."""
    numbers = _version_numbers(run_dir)
    for v in sorted((v for v in numbers if v > (current or 0)), reverse=True):
        vdir = version_dir(run_dir, v)
        progress = vdir / PROGRESS_FILE
        if progress.is_file() and _config_hash_of(vdir) == config_hash(cfg):
            done = {}
            for path, entry in json.loads(progress.read_text()).items():
                try:
                    load_tensors(vdir / path, entry["sha256"])
                    done[path] = entry
                except UserError:  # a file cut short by the crash: train it again
                    pass
            return v, done
    return max([current or 0, *numbers]) + 1, {}


def start_build(run_dir: Path, n: int, cfg: Config, continued: bool) -> Path:
    """The directory of version n under construction, emptied unless `continued`; its config.yaml is
    `cfg` (a continued build may have started with other non-semantic keys, e.g. train.experts)."""
    vdir = version_dir(run_dir, n)
    if not continued:
        shutil.rmtree(vdir, ignore_errors=True)
    (vdir / "experts").mkdir(parents=True, exist_ok=True)
    (vdir / "router").mkdir(exist_ok=True)
    (vdir / CONFIG_FILE).write_text(to_yaml(cfg))
    return vdir


def add_finished_file(run_dir: Path, cfg: Config, path: str, data: bytes, entry: dict) -> int:
    """Add a file trained elsewhere (an imported expert) to the unfinished build of `cfg`, started if
    there is none, as if that build had trained it: the next build keeps it while its lineage matches.
    Returns the build's version number."""
    n, done = unfinished_build(run_dir, read_current(run_dir), cfg)
    vdir = start_build(run_dir, n, cfg, continued=bool(done))
    write_file(vdir / path, data)
    _write_json(vdir / PROGRESS_FILE, {**done, path: {**entry, "trained_in_version": n}})
    return n


def trained_file(run_dir: Path, path: str) -> tuple[Path, dict, str] | None:
    """The newest trained copy of a version file: (file, manifest entry, config YAML), from the newest
    unfinished build that finished it, else from the served version; None if neither has it."""
    current = read_current(run_dir)
    for v in sorted((v for v in _version_numbers(run_dir) if v > (current or 0)), reverse=True):
        vdir = version_dir(run_dir, v)
        progress = vdir / PROGRESS_FILE
        entry = json.loads(progress.read_text()).get(path) if progress.is_file() else None
        if entry is not None and (vdir / CONFIG_FILE).is_file():
            return vdir / path, entry, (vdir / CONFIG_FILE).read_text()
    if current is None:
        return None
    vdir = version_dir(run_dir, current)
    manifest = read_manifest(vdir)
    if path not in manifest["files"]:
        return None
    entry = {"environment": manifest["environment"], **manifest["files"][path]}  # older manifests: per version
    return vdir / path, entry, (vdir / CONFIG_FILE).read_text()


def remaining(run_dir: Path, registry: Registry, cfg: Config) -> list[str]:
    """Files a build of `cfg` would still train: neither served with the same lineage nor finished in
    its unfinished build."""
    _, done = unfinished_build(run_dir, read_current(run_dir), cfg)
    return [j.path for j in changes(run_dir, registry, cfg) if done.get(j.path, {}).get("lineage") != j.lineage]


def _config_hash_of(vdir: Path) -> str | None:
    try:
        return config_hash(config_from_yaml((vdir / CONFIG_FILE).read_text()))
    except (OSError, OmegaConfBaseException):
        return None


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _lineage(**fields: object) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _version_numbers(run_dir: Path) -> list[int]:
    root = Path(run_dir) / VERSIONS_DIR
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.is_dir() else []


def _link(src: Path, dst: Path) -> None:
    """Reuse a file of the previous version: a hard link where possible (same bytes, no copy)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
