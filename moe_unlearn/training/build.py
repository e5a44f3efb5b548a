"""Build one model version: reuse every file whose lineage is unchanged, train the rest in order
(the base, experts, then router stages 0..K-1), evaluate, and go live (moe_unlearn.storage.builds keeps the
version directory consistent through all of it).
"""

import errno
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console

from moe_unlearn.config import Config, config_hash
from moe_unlearn.data.splits import ids_digest
from moe_unlearn.errors import UserError
from moe_unlearn.models.expert import ByteTransformer
from moe_unlearn.models.loading import compose, join_stage, split_stage
from moe_unlearn.models.mixing import saved_settings
from moe_unlearn.models.mixing import settings as mixing_settings
from moe_unlearn.rundir import BASE_FILE, CONFIG_FILE, read_current, version_dir
from moe_unlearn.storage.builds import (
    go_live,
    link,
    logs_dir,
    record_progress,
    served_files,
    start_build,
    tidy_after_switch,
    unfinished_build,
)
from moe_unlearn.storage.registry import BASE, Registry, now
from moe_unlearn.storage.versions import checked_bytes, environment, load_tensors, save_tensors
from moe_unlearn.training.distributed import is_primary
from moe_unlearn.training.evaluate import evaluate
from moe_unlearn.training.features import LAYOUT, features_tensors, read_features
from moe_unlearn.training.plan import Job, changes, plan

Tensors = dict[str, torch.Tensor]


@dataclass
class Build:
    """A version under construction: what it reuses, what an earlier try of it finished, what it trains."""

    run_dir: Path
    n: int
    vdir: Path
    current: int | None
    old: dict  # the served version's manifest ({"files": {}} before the first training)
    reusable: set[str]  # paths whose served file has the same lineage
    done: dict  # path -> manifest entry finished by an interrupted build of this version
    finished: set[str] = field(default_factory=set)  # paths of `done` still wanted

    def stored(self, path: str) -> tuple[Path, dict]:
        """An existing file this build keeps: (file, manifest entry)."""
        if path in self.reusable:
            return version_dir(self.run_dir, self.current) / path, dict(self.old["files"][path])
        return self.vdir / path, self.done[path]


def build_version(run_dir: Path, registry: Registry, cfg: Config, **kwargs) -> dict:
    """`_build_version`, with a full disk said in one line: the build stops where it is, the served
    version is untouched, and the same command (or `--resume`) picks the build up once there is room."""
    try:
        return _build_version(run_dir, registry, cfg, **kwargs)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        served = read_current(run_dir)
        raise UserError(
            f"no space left on the device of {run_dir} while building the next version: "
            f"{'version ' + str(served) if served is not None else 'nothing'} is still served, and what was built "
            "so far is kept; free some space and run the same command again (a forget: `moe-unlearn forget "
            "--resume ID`, see `moe-unlearn registry`)"
        ) from None


def _build_version(
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
    move them, and a build without `only` trains what is left. Returns the build's progress then
    ({"version", "live": False, "trained", "remaining"})."""
    # Lightning (seconds to import) is loaded only when something trains: serving, scoring and the
    # audit read versions through this package without it.
    from moe_unlearn.training.trainer import configure_torch

    console = console or Console(stderr=True)
    configure_torch(cfg)
    experts, source_map = registry.experts(), registry.source_map()  # one snapshot for the whole build
    jobs, heldout = plan(registry, cfg)
    unknown = sorted(set(only or []) - set(experts))
    if unknown:
        raise UserError(f"train.experts names unknown experts {unknown}; the registry has {experts}")
    current, old = served_files(run_dir)
    reusable = {
        j.path
        for j in jobs
        if old["files"].get(j.path, {}).get("lineage") == j.lineage
        and not (only and j.expert in only and j.kind == "expert")
    }
    mixing = mixing_settings(cfg.model.mixing, cfg.model.router.top_k, has_base=any(j.kind == "base" for j in jobs))
    same_mixing = saved_settings(old) == mixing
    if current is not None and len(reusable) == len(jobs) and old.get("experts") == experts and same_mixing:
        if is_primary(cfg):
            tidy_after_switch(run_dir, current)
        console.print(f"Version {current} is up to date: nothing to train.")
        return old

    # With several processes (DDP) only global rank 0 writes; the others plan the same build from the
    # same registry and files and take part in its fits (training/distributed.py).
    primary = is_primary(cfg)
    if primary:
        registry.remove_versions_after(current)  # rows of builds that never went live
    n, done = unfinished_build(run_dir, current, cfg)
    vdir = start_build(run_dir, n, cfg, continued=bool(done)) if primary else version_dir(run_dir, n)
    build = Build(run_dir, n, vdir, current, old, reusable, done)
    build.finished = {j.path for j in jobs if _finished(done.get(j.path, {}), j)} - reusable
    unbuilt = [j.expert for j in jobs if j.kind == "expert" and j.path not in reusable | build.finished]
    missing = [e for e in unbuilt if only and e not in only]
    if missing:  # a share of the experts, the rest trained elsewhere: train ours, go live later
        jobs = [j for j in jobs if j.kind == "base" or (j.kind == "expert" and j.expert in only)]
    todo = [j for j in jobs if j.path not in reusable | build.finished]
    if not primary:
        return _take_part(cfg, jobs, build, {j.path for j in todo})

    files, state, last_stage = _make_files(cfg, jobs, build, len(todo), console)
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

    model = None
    if evaluate_heldout:
        base = state[BASE]() if BASE in state else None
        model = compose(cfg, {e: state[e]() for e in experts}, last_stage[0], base)
    manifest = _manifest(cfg, build, experts, source_map, files, model, heldout, console)
    return go_live(run_dir, registry, n, manifest, None if keep_logs else logs_dir(vdir), before_switch)


def _manifest(cfg, build: Build, experts, source_map, files: dict, model, heldout, console: Console) -> dict:
    """The new version's manifest; `eval` holds the held-out figures of `model` (None: not evaluated)."""
    ev = None
    if model is not None:
        console.print("evaluating on held-out records ...")
        ev = evaluate(model, heldout, source_map)
    return {
        "version": build.n,
        "parent": build.current,
        "created": now(),
        "config_sha256": config_hash(cfg),
        "config_file_sha256": hashlib.sha256((build.vdir / CONFIG_FILE).read_bytes()).hexdigest(),
        "environment": environment(),
        "experts": experts,
        "sources": source_map,
        "top_k": cfg.model.router.top_k,
        "mixing": mixing_settings(cfg.model.mixing, cfg.model.router.top_k, has_base=BASE_FILE in files),
        "files": files,
        "trained": [path for path, e in files.items() if e["trained_in_version"] == build.n],
        "eval": ev,
        "method": "exact",
    }


def _make_files(cfg: Config, jobs: list[Job], build: Build, total: int, console: Console):
    """Link the reused files, keep the finished ones, train the rest, in job order. Returns (manifest
    entries by path, expert name -> loader of its tensors, the last router stage's (weights, Fisher))."""
    files, state, previous_stage, step, env = {}, {}, None, 0, environment()
    features: dict[str, torch.Tensor] = {}  # record id -> base features, for the stages of a FeatureRouter
    for job in jobs:
        started = time.perf_counter()
        if job.path in build.reusable | build.finished:
            src, entry = build.stored(job.path)
            if job.path in build.reusable:
                checked_bytes(src, entry["sha256"])  # a corrupt file stops the build, naming the served file
                (build.vdir / job.path).unlink(missing_ok=True)
                link(src, build.vdir / job.path)
            tensors = load_tensors(build.vdir / job.path, entry["sha256"]) if job.kind != "expert" else None
            if job.kind == "router-features":
                features.update(read_features(tensors))
            if job.kind == "expert":  # loaded when a later job needs it; its bytes are checked now
                checked_bytes(build.vdir / job.path, entry["sha256"])
                state[job.expert] = lambda p=build.vdir / job.path, s=entry["sha256"]: load_tensors(p, s)
        else:
            step += 1
            what = {"base": "training the base model", "router-features": "base features of expert"}.get(
                job.kind, f"training {job.kind}"
            )
            console.print(
                f"[bold]\\[{step}/{total}][/] {what}"
                + ("" if job.kind == "base" else f" [cyan]{job.expert}[/]")
                + (f" (stage {job.stage})" if job.stage is not None else "")
                + f" on {len(job.records):,} records"
            )
            base = state.get(BASE, lambda: None)()
            if job.kind == "router-features":
                tensors = _features(cfg, job, build, base, files[BASE_FILE]["lineage"], console)
                features.update(read_features(tensors))
            else:
                tensors = _train(cfg, job, previous_stage, logs_dir(build.vdir), base, features)
            entry = {
                "sha256": save_tensors(build.vdir / job.path, tensors),
                "lineage": job.lineage,
                "kind": job.kind,
                "expert": job.expert,
                "stage": job.stage,
                "records": len(job.records),
                "records_sha256": ids_digest(r.id for r in job.records),
                "config_sha256": config_hash(cfg),
                "environment": env,  # per file: an imported expert keeps the one it was trained in
                "trained_in_version": build.n,
                "train_seconds": round(time.perf_counter() - started, 2),
            }
            if job.kind == "router-features":  # its rows can be reused by a build on the same base and layout
                entry["base_lineage"], entry["layout"] = files[BASE_FILE]["lineage"], LAYOUT
            build.done[job.path] = entry
            record_progress(build.vdir, build.done)
            if job.kind == "expert":
                state[job.expert] = lambda t=tensors: t
        if job.kind == "base":
            state[BASE] = lambda t=tensors: t
        if job.kind == "router-stage":
            previous_stage = split_stage(tensors)
        files[job.path] = entry
    return files, state, previous_stage


def _train(
    cfg: Config,
    job: Job,
    previous_stage: tuple[Tensors, Tensors] | None,
    log_dir: Path,
    base: Tensors | None,
    features: dict[str, torch.Tensor],
) -> Tensors:
    """Train one file of a version: the base, an expert (branched from `base` when there is one), or a
    router stage (weights and Fisher) from the previous one (on `features` when it reads the base's)."""
    from moe_unlearn.training.trainer import train_base, train_expert, train_router_stage

    if job.kind == "base":
        return train_base(cfg, job.records, log_dir)
    if job.kind == "expert":
        return train_expert(cfg, job.expert, job.records, log_dir, base)
    weights, fisher = train_router_stage(
        cfg, job.stage, job.expert, previous_stage, job.records, job.labels, log_dir, features or None
    )
    return join_stage(weights, fisher)


def _finished(entry: dict, job: Job) -> bool:
    """Whether an interrupted build's file serves `job`: same lineage, and (features) rows recorded in
    the current layout (builds from before it was recorded may hold rows of an older one)."""
    return entry.get("lineage") == job.lineage and (job.kind != "router-features" or entry.get("layout") == LAYOUT)


def _features(cfg: Config, job: Job, build: Build, base: Tensors, base_lineage: str, console: Console) -> Tensors:
    """An expert's base-features file: the served version's rows reused where it was made from the same
    base in the same layout (each row is then a pure function of base and record), the others computed.
    Files from before `layout` was recorded are recomputed: their rows may be of an older layout."""
    known = {}
    old = build.old["files"].get(job.path)
    if old is not None and old.get("base_lineage") == base_lineage and old.get("layout") == LAYOUT:
        known = read_features(load_tensors(version_dir(build.run_dir, build.current) / job.path, old["sha256"]))
    model = ByteTransformer(cfg.model.expert)
    model.load_state_dict(base)
    tensors, computed = features_tensors(model, job.records, cfg.train.router.prefix_bytes, known)
    console.print(f"  {computed:,} records read by the base, {len(job.records) - computed:,} kept")
    return tensors


def _take_part(cfg: Config, jobs: list[Job], build: Build, todo: set[str]) -> dict:
    """A DDP follower's share of a build: the fits of the `todo` paths, each router stage from the same
    previous stage as on rank 0 (trained here, or read from the files the build keeps). Writes nothing
    (Lightning logs on rank 0 only) and returns {}. Stages of a FeatureRouter are not DDP fits (training/
    trainer.py, `fit_head`): rank 0 trains them alone."""
    previous_stage, base, features = None, None, {}
    for job in jobs:
        if job.kind == "router-stage" and features:
            continue
        if job.path in todo and job.kind == "router-features":
            lineage = next(j.lineage for j in jobs if j.kind == "base")
            tensors = _features(cfg, job, build, base, lineage, Console(quiet=True))
        elif job.path in todo:
            tensors = _train(cfg, job, previous_stage, logs_dir(build.vdir), base, features)
        elif job.kind != "expert":
            src, entry = build.stored(job.path)
            tensors = load_tensors(src, entry["sha256"])
        if job.kind == "base":
            base = tensors
        if job.kind == "router-features":
            features.update(read_features(tensors))
        if job.kind == "router-stage":
            previous_stage = split_stage(tensors)
    return {}


def remaining(run_dir: Path, registry: Registry, cfg: Config) -> list[str]:
    """Files a build of `cfg` would still train: neither served with the same lineage nor finished in
    its unfinished build."""
    current, _ = served_files(run_dir)
    _, done = unfinished_build(run_dir, current, cfg)
    return [j.path for j in changes(run_dir, registry, cfg) if not _finished(done.get(j.path, {}), j)]
