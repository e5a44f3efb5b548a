"""The public Python API: `Run(run_dir)` with the same verbs as the CLI.

    from moe_unlearn import Run
    run = Run("checkpoints/default")
    run.train(overrides=["train.expert.max_steps=200"])
    run.generate("Preheat the oven", max_new_bytes=80, seed=1)["text"]
    run.score("Light rain in Lisbon")["bits_per_byte"]

A run directory holds `registry.db`, `versions/<n>/` and the `current` pointer. It is created by the
first `train` or `ingest`, which writes the built-in corpus into the store (unless `data.builtin=false`).
"""

import fcntl
import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from rich.console import Console

from moe_unlearn.audit.collect import add_privleak
from moe_unlearn.audit.measure import canary_exposure
from moe_unlearn.audit.report import write_report
from moe_unlearn.config import Config, config_from_yaml, load_config
from moe_unlearn.data.corpus import generate_corpus, make_canaries
from moe_unlearn.data.ingest import progress_bar, read_files
from moe_unlearn.data.splits import is_heldout
from moe_unlearn.errors import UserError
from moe_unlearn.faults import crash_point
from moe_unlearn.models.moe import MixtureOfExperts
from moe_unlearn.storage.registry import Registry, check_name, now
from moe_unlearn.storage.versions import load_tensors, read_current, read_manifest, version_dir
from moe_unlearn.training.bundles import export_bundle, import_bundle, read_bundle
from moe_unlearn.training.evaluate import evaluate
from moe_unlearn.training.pipeline import CONFIG_FILE, build_version, compose, plan, split_stage
from moe_unlearn.unlearning.job import run_queue, served_config, would_retrain
from moe_unlearn.unlearning.oracle import verify_against_oracle
from moe_unlearn.unlearning.requests import (
    drop_rows,
    new_request_id,
    parse_deadline,
    resolve_drop,
    resolve_forget,
)
from moe_unlearn.unlearning.scrub import AUDITS_DIR, LOCK_FILE, REGISTRY_FILE

DEFAULT_RUN_DIR = Path("checkpoints/default")
METHODS = ("exact", "gradient-ascent", "nabla-tau")


class Run:
    """A run directory: its registry, its versions, and the model named by `current`."""

    def __init__(self, run_dir: str | Path = DEFAULT_RUN_DIR, console: Console | None = None):
        self.run_dir = Path(run_dir)
        self.console = console or Console(stderr=True)
        self._registry: Registry | None = None
        self._loaded: tuple[int, MixtureOfExperts, dict] | None = None

    # --- training and data ------------------------------------------------------------------------

    def train(self, config: str | Path | None = None, overrides: Sequence[str] = ()) -> dict:
        """Train (or bring up to date) the composed model; returns the new version's manifest. With
        `train.experts` naming a share of experts that this run directory lacks the others of, trains
        those into the next version without making it live (see `export_expert`) and returns
        {"version", "live": False, "trained", "remaining"}."""
        cfg = load_config(config, overrides)
        with self._lock():
            registry = self._open(cfg)
            _check_expert_map(registry, cfg)
            return build_version(self.run_dir, registry, cfg, only=cfg.train.experts, console=self.console)

    def ingest(
        self,
        source: str,
        files: Sequence[str | Path],
        *,
        expert: str | None = None,
        id_field: str = "id",
        text_field: str = "text",
        allow_forgotten: bool = False,
    ) -> dict:
        """Add the records of `.txt`/`.jsonl` files to `source` (created if new, with an expert of the
        same name unless `expert` is given), all or nothing. The next `train` trains what changed."""
        check_name("source", source)
        with self._lock():
            registry = self._open(None if self.exists() else load_config())  # new: default built-in corpus
            with registry.transaction(), progress_bar(self.console) as progress:
                if not registry.has_source(source):
                    registry.add_source(source, expert or source)
                elif expert and registry.source_map()[source] != expert:
                    raise UserError(
                        f"source {source!r} belongs to expert {registry.source_map()[source]!r}, not {expert!r}"
                    )
                paths = [Path(f) for f in files]
                records = read_files(paths, source, id_field=id_field, text_field=text_field, progress=progress)
                n = registry.insert_records(records, allow_forgotten=allow_forgotten)
        return {"source": source, "expert": registry.source_map()[source], "records_added": n}

    def init(self, config: str | Path | None = None, overrides: Sequence[str] = ()) -> None:
        """Create the run directory (with the built-in corpus unless `data.builtin=false`) without training."""
        cfg = load_config(config, overrides)
        with self._lock():
            self._open(cfg)

    def update(self) -> dict:
        """Finish pending forget requests, then retrain the experts whose sources gained records (and the
        router stages from the earliest of them) with the served version's config."""
        with self._lock(wait=True):
            registry = self._open(None)
            run_queue(self.run_dir, registry, self.console)
            cfg = self._served_config()
            return build_version(self.run_dir, registry, cfg, console=self.console)

    def export_expert(self, name: str, out: str | Path) -> dict:
        """Write expert `name`'s trained weights with their lineage to the new bundle directory `out`, for
        `import_expert` in another run directory (experts trained on separate machines). The newest copy
        is taken: from the unfinished build `train.experts=[name]` leaves, else from the served version."""
        return export_bundle(self.run_dir, self._open(None), name, Path(out))

    def import_expert(
        self, bundle: str | Path, config: str | Path | None = None, overrides: Sequence[str] = ()
    ) -> dict:
        """Add an exported expert to this run's next version if it is what this run would train for it
        with this config (`train`'s `config` and `overrides`): same config hash, same training-record
        ids, sha256 intact. The next `train` trains only the other experts and the router stages, then
        goes live. Creates the run directory (with the built-in corpus) like `train` does."""
        cfg = load_config(config, overrides)
        checked, data = read_bundle(Path(bundle))  # before anything is created
        with self._lock():
            registry = self._open(cfg)
            _check_expert_map(registry, cfg)
            return import_bundle(self.run_dir, registry, cfg, Path(bundle), checked, data)

    def add(self, source: str, files: Sequence[str | Path], *, expert: str | None = None, **fields) -> dict:
        """A new source with its own new expert (or a new `expert` name): ingest it, then train that
        expert and one more router stage, started from the last one. Nothing else is retrained."""
        registry = self._open(None)
        if registry.has_source(source):
            raise UserError(f"source {source!r} already exists: ingest into it and run `moe-unlearn update`")
        if expert in registry.experts():
            raise UserError(f"expert {expert!r} already exists: `add` creates a new expert")
        self._served_config()
        self.ingest(source, files, expert=expert, **fields)
        return self.update()

    def forget(
        self,
        *,
        records: Sequence[str] = (),
        match: str | None = None,
        ids_file: str | Path | None = None,
        source: str | None = None,
        dry_run: bool = False,
        deadline: str | None = None,
        wait: bool = True,
        audit: bool = False,
        method: str = "exact",
    ) -> dict:
        """Forget records exactly: tombstone them, retrain each affected expert once and the router
        stages from the earliest affected one, switch, scrub, certify. Returns the certificate (or, with
        `dry_run`, what would be removed and retrained; with `wait=False`, the queued request).
        `audit` measures the versions before and after while the text still exists (see `audit`);
        `method` "gradient-ascent" or "nabla-tau" makes an approximate version instead, for contrast."""
        if method not in METHODS:
            raise UserError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        registry = self._open(None)
        deadline = parse_deadline(deadline)
        finished = self._finish_unfinished(registry)
        if records and not match and not ids_file:
            done = registry.forgotten_by(records)
            if len(done) == len(set(records)) and len(set(done.values())) == 1:  # the same command again
                return self.resume(next(iter(done.values())))
        try:
            rows, payload = resolve_forget(
                registry, record_ids=records, match=match, ids_file=Path(ids_file) if ids_file else None, source=source
            )
        except UserError as e:
            if finished and match is not None:
                raise UserError(f"{e} (interrupted requests {', '.join(finished)} were just completed)") from None
            raise
        payload = {**payload, "audit": audit, "method": method}
        return self._submit(registry, "forget", payload, rows, deadline, dry_run, wait)

    def drop(
        self,
        *,
        source: str | None = None,
        expert: str | None = None,
        dry_run: bool = False,
        deadline: str | None = None,
        wait: bool = True,
    ) -> dict:
        """Drop a source (its expert is retrained without it, or deleted if it had no other source) or
        an expert with all its sources; router stages re-run from the one before it."""
        registry = self._open(None)
        deadline = parse_deadline(deadline)
        self._finish_unfinished(registry)
        payload = resolve_drop(registry, source=source, expert=expert)
        rows = drop_rows(registry, payload)
        return self._submit(registry, "drop", {**payload, "records": len(rows)}, rows, deadline, dry_run, wait)

    def resume(self, request_id: str) -> dict:
        """Finish a pending or interrupted request (and any others waiting); returns its certificate."""
        registry = self._open(None)
        if registry.request(request_id) is None:
            raise UserError(f"unknown request {request_id!r}")
        return self._result(registry, request_id, wait=True)

    def requests(self) -> list[dict]:
        """Every forget and drop request with its status, deadline and certificate hash."""
        return [_request_summary(r) for r in self._open(None).requests()]

    def certificate(self, request_id: str) -> dict:
        """The certificate of a finished request, with its place in the hash chain."""
        registry = self._open(None)
        for entry in registry.certificates():
            if entry["request_id"] == request_id:
                return {**entry["body"], "chain_hash": entry["hash"], "chain_seq": entry["seq"]}
        request = registry.request(request_id)
        if request is None:
            raise UserError(f"unknown request {request_id!r}")
        raise UserError(f"request {request_id} has no certificate yet (status {request['status']})")

    def verify(self, work_dir: str | Path | None = None) -> dict:
        """Train the oracle (from scratch, fresh directory and process, retained records only) and
        compare it with the served version tensor for tensor."""
        with self._lock(wait=True):
            registry = self._open(None)
            self._served_config()
            result = verify_against_oracle(self.run_dir, registry, work_dir, self.console)
            with registry.transaction():  # what `audit` reports as the oracle check of this version
                registry.set_meta(f"verify:{result['version']}", json.dumps({**result, "at": now()}))
            return result

    def audit(self, request_id: str, out_dir: str | Path | None = None) -> dict:
        """The audit report of a request forgotten with `audit=True`: the numbers measured at forget time,
        privleak, timings and the oracle check (`verify`, when run on that version), written as
        audit.json, audit.md and PNG plots to `out_dir` (default: audits/<request id>/ in the run directory)."""
        registry = self._open(None)
        request = registry.request(request_id)
        if request is None:
            raise UserError(f"unknown request {request_id!r}")
        numbers = (request["result"] or {}).get("audit")
        if numbers is None:
            if request["status"] != "done":
                raise UserError(f"request {request_id} is {request['status']}: audit it once it is done")
            raise UserError(f"request {request_id} was not audited: forget with --audit to measure it")
        after = numbers["versions"]["after"]
        exact = numbers["method"] == "exact"
        verified = registry.get_meta(f"verify:{after}")
        verify = json.loads(verified) if verified else None
        oracle = "after-model: bit-identical to retraining from scratch by construction" if exact else None
        if verify is not None and verify["equal"]:
            oracle = "after-model: `verify` found it bit-identical to a model trained from scratch"
        manifest = registry.manifest(after)
        certificate = self.certificate(request_id)
        trained = [e.get("train_seconds", 0.0) for p, e in manifest["files"].items() if p in manifest["trained"]]
        report = {
            **numbers,
            "request": request_id,
            "exact": exact,
            "membership": add_privleak(numbers, oracle),
            "timings": {
                "forget_seconds": round(certificate["wall_seconds"] - numbers["audit_seconds"], 1),
                "audit_seconds": numbers["audit_seconds"],
                "trained_seconds": round(sum(trained), 1),
                "full_retrain_seconds": round(sum(e.get("train_seconds", 0.0) for e in manifest["files"].values()), 1),
                "oracle_seconds": verify["oracle_seconds"] if verify else None,
            },
            "checks": {
                "current_version": read_current(self.run_dir),
                "verify": None if verify is None else {k: verify[k] for k in ("equal", "comparable", "oracle_seconds")},
            },
        }
        out = Path(out_dir) if out_dir else self.run_dir / AUDITS_DIR / request_id
        files = write_report(out, report)
        return {**report, "files": [str(p) for p in files]}

    # --- inspection -------------------------------------------------------------------------------

    def info(self) -> dict:
        """Sources, experts (in stage order), record counts, the current version and its manifest."""
        if not self.exists():
            raise UserError(f"no run directory at {self.run_dir}: run `moe-unlearn train` first")
        registry = self._open(None)
        current = read_current(self.run_dir)
        return {
            "run_dir": str(self.run_dir),
            "experts": registry.experts(),
            "sources": [asdict(s) for s in registry.sources()],
            "records": registry.count_records(),
            "current_version": current,
            "versions": [{"version": n, "created": t} for n, t in registry.versions()],
            "manifest": read_manifest(version_dir(self.run_dir, current)) if current is not None else None,
            "requests": [_request_summary(r) for r in registry.requests()],
            "certificate_chain_intact": registry.verify_chain() is None,
        }

    # --- inference --------------------------------------------------------------------------------

    def load(self) -> tuple[MixtureOfExperts, dict]:
        """The model named by `current` (every file checked against the manifest), cached per version."""
        current = read_current(self.run_dir)
        if current is None:
            raise UserError(f"no trained model in {self.run_dir}: run `moe-unlearn train` first")
        if self._loaded is None or self._loaded[0] != current:
            try:
                self._loaded = (current, *load_version(self.run_dir, current))
            except UserError:
                if read_current(self.run_dir) == current:
                    raise
                return self.load()  # a job switched versions while we read the old one: read the new one
        return self._loaded[1], self._loaded[2]

    def generate(
        self, prompt: str, max_new_bytes: int = 200, temperature: float = 0.8, top_k: int = 0, seed: int = 0
    ) -> dict:
        """Continue `prompt`; the result names the experts that produced it and the version."""
        if max_new_bytes < 0:
            raise UserError("max_new_bytes must be >= 0")
        model, manifest = self.load()
        new, weights = model.generate(prompt.encode("utf-8"), max_new_bytes, temperature, top_k, seed)
        return {
            "prompt": prompt,
            "text": new.decode("utf-8", errors="replace"),
            "expert_weights": {k: round(v, 4) for k, v in weights.items()},
            "version": manifest["version"],
        }

    def evaluate(self) -> dict:
        """Held-out bits per byte per source and router top-1 accuracy of the current version."""
        model, manifest = self.load()
        _, heldout = plan(self._open(None), self._served_config())
        ev = evaluate(model, heldout, manifest["sources"])
        return {"version": manifest["version"], "sources": manifest["sources"], "eval": ev}

    def score(self, text: str) -> dict:
        """Bits per byte of `text` under the composed model and the router's mean expert weights."""
        if not text:
            raise UserError("cannot score empty text")
        model, manifest = self.load()
        result = model.score(text.encode("utf-8"))
        result["expert_weights"] = {k: round(v, 4) for k, v in result["expert_weights"].items()}
        return {**result, "version": manifest["version"]}

    def canaries(self, ids: Sequence[str] = (), candidates: int = 4096) -> dict:
        """How well the served model knows each built-in canary's secret (all, or those named by `ids`):
        copies still trained on, greedy continuation of its prefix, the secret's rank among `candidates`
        random secrets and its exposure in bits. For seeing forgetting happen; `forget --audit` measures it."""
        cfg = self._served_config()
        corpus = cfg.data.corpus
        if not cfg.data.builtin or corpus.canaries == 0:
            raise UserError("this run has no canaries: train the built-in corpus with data.corpus.canaries=N")
        every = make_canaries(corpus.canaries, corpus.seed, corpus.domains)
        unknown = sorted(set(ids) - {c.id for c in every})
        if unknown:
            raise UserError(f"unknown canary {unknown[0]!r}: this run has canary-0000 .. {every[-1].id}")
        if candidates < 1:
            raise UserError("candidates must be >= 1")
        model, manifest = self.load()
        registry = self._open(None)
        rows = []
        for c in [c for c in every if c.id in ids] if ids else every:
            live = registry.record_rows(c.record_ids(corpus.canary_repeats))
            found = canary_exposure(model, c, candidates)
            greedy, _ = model.generate(c.prefix.encode(), len(c.secret.encode()), temperature=0)
            rows.append(
                {
                    "id": c.id,
                    "source": c.source,
                    "prefix": c.prefix,
                    "secret": c.secret,
                    "copies_trained_on": sum(not is_heldout(i, cfg.seed, cfg.data.heldout_fraction) for i in live),
                    "greedy": greedy.decode("utf-8", errors="replace"),
                    "extracted": greedy == c.secret.encode(),
                    "rank": found["rank"],
                    "exposure": round(found["exposure"], 2),
                }
            )
        return {"version": manifest["version"], "candidates": candidates, "canaries": rows}

    # --- internals --------------------------------------------------------------------------------

    def _served_config(self) -> Config:
        cfg = served_config(self.run_dir)
        if cfg is None:
            raise UserError(f"no trained model in {self.run_dir}: run `moe-unlearn train` first")
        return cfg

    def _finish_unfinished(self, registry: Registry) -> list[str]:
        """Complete requests a crash left half-done, so a new request never overtakes them."""
        if not registry.requests(["running"]):
            return []
        with self._lock(wait=True):
            return run_queue(self.run_dir, registry, self.console)

    def _submit(
        self,
        registry: Registry,
        kind: str,
        payload: dict,
        rows: list[tuple[str, str, str]],
        deadline: str | None,
        dry_run: bool,
        wait: bool,
    ) -> dict:
        request_id = new_request_id(kind)
        with registry.preview():  # the request as the job would see it, rolled back
            registry.add_request(request_id, kind, payload, deadline)
            registry.add_request_records(request_id, rows)
            retrain = would_retrain(self.run_dir, registry, registry.request(request_id))
        if dry_run:
            return {
                "dry_run": True,
                "kind": kind,
                "scope": payload,
                "records": [{"id": i, "source": s} for i, s, _ in rows],
                "record_count": len(rows),
                "would_retrain": retrain,
            }
        with registry.transaction():
            registry.add_request(request_id, kind, payload, deadline)
            registry.add_request_records(request_id, rows)
        crash_point("after-resolve")
        self.console.print(
            f"request {request_id}: {len(rows):,} records; retrains experts {retrain['experts'] or 'none'}, "
            f"router stages {retrain['router_stages'] or 'none'}"
        )
        return self._result(registry, request_id, wait)

    def _result(self, registry: Registry, request_id: str, wait: bool) -> dict:
        request = registry.request(request_id)
        if request["status"] in ("pending", "running") and wait:
            with self._lock(wait=True):
                run_queue(self.run_dir, registry, self.console)
            request = registry.request(request_id)
        if request["status"] == "failed":
            raise UserError(f"request {request_id} failed: {request['error']}")
        if request["status"] != "done":
            return {"request_id": request_id, "status": request["status"], "step": request["step"]}
        return self.certificate(request_id)

    def exists(self) -> bool:
        return (self.run_dir / REGISTRY_FILE).is_file()

    @property
    def registry(self) -> Registry:
        """The run directory's registry, for reading its sources, experts and records (benchmarks, tools);
        change them through `ingest`, `forget` and `drop`, which keep versions and requests consistent."""
        return self._open(None)

    def _open(self, cfg: Config | None) -> Registry:
        """The registry; a new run directory is created from `cfg` (with the built-in corpus)."""
        if self._registry is None:
            if not self.exists():
                if cfg is None:
                    raise UserError(f"no run directory at {self.run_dir}")
                self._create(cfg)
            self._registry = Registry(self.run_dir / REGISTRY_FILE)
        if cfg is not None and cfg.data.builtin:
            stored = self._registry.get_meta("builtin_corpus")
            wanted = json.dumps(asdict(cfg.data.corpus), sort_keys=True)
            if stored is not None and stored != wanted:
                raise UserError(
                    f"data.corpus differs from the built-in corpus {self.run_dir} was created with ({stored}); "
                    "the corpus is written once per run directory: use a new --run-dir"
                )
        return self._registry

    def _create(self, cfg: Config) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        ours = (LOCK_FILE, f"{REGISTRY_FILE}.creating")
        others = sorted(p.name for p in self.run_dir.iterdir() if p.name not in ours)
        if others:  # a scrub deletes whatever is not on the allow-list: never adopt a directory with files
            raise UserError(f"{self.run_dir} is not empty and not a run directory (holds {others[0]!r}, ...)")
        tmp = self.run_dir / f"{REGISTRY_FILE}.creating"
        tmp.unlink(missing_ok=True)
        registry = Registry(tmp)
        with registry.transaction():
            if cfg.data.builtin:
                c = cfg.data.corpus
                records = generate_corpus(c.domains, c.records_per_domain, c.seed, c.canaries, c.canary_repeats)
                mapping = {s: spec.name for spec in cfg.experts for s in spec.sources}
                for source in dict.fromkeys(r.source for r in records):
                    registry.add_source(source, mapping.get(source, source), builtin=True)
                registry.insert_records(records)
                registry.set_meta("builtin_corpus", json.dumps(asdict(c), sort_keys=True))
        registry.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        registry.close()
        for suffix in ("-wal", "-shm"):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)
        tmp.rename(self.run_dir / REGISTRY_FILE)  # the run directory exists only once its store is complete

    @contextmanager
    def _lock(self, wait: bool = False) -> Iterator[None]:
        """One job at a time per run directory. Without `wait` a second one fails fast with a clear
        message; with it, it queues behind the running job."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / LOCK_FILE, "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    raise UserError(f"{self.run_dir} is busy: another job is running") from None
                self.console.print(f"waiting for the job running on {self.run_dir} ...")
                fcntl.flock(f, fcntl.LOCK_EX)
            yield


def load_version(run_dir: Path, n: int) -> tuple[MixtureOfExperts, dict]:
    """Load version n, checking the config and every model file against its manifest's sha256."""
    vdir = version_dir(run_dir, n)
    manifest = read_manifest(vdir)
    config_path = vdir / CONFIG_FILE
    if not config_path.is_file():
        raise UserError(f"missing config file {config_path}")
    if hashlib.sha256(config_path.read_bytes()).hexdigest() != manifest["config_file_sha256"]:
        raise UserError(f"corrupt config file {config_path}: sha256 does not match the manifest")
    cfg = config_from_yaml(config_path.read_text())
    files = manifest["files"]
    experts = {
        e: load_tensors(vdir / f"experts/{e}.safetensors", files[f"experts/{e}.safetensors"]["sha256"])
        for e in manifest["experts"]
    }
    last = f"router/stage_{len(manifest['experts']) - 1}.safetensors"
    for path, entry in files.items():  # intermediate router stages are only read by a rebuild; check them now
        if path.startswith("router/") and path != last:
            load_tensors(vdir / path, entry["sha256"])
    weights, _ = split_stage(load_tensors(vdir / last, files[last]["sha256"]))
    return compose(cfg, experts, weights), manifest


def _check_expert_map(registry: Registry, cfg: Config) -> None:
    """The config's source -> expert map must agree with the registry's (the registry is the truth)."""
    current = registry.source_map()
    for spec in cfg.experts:
        for source in spec.sources:
            if source not in current:
                raise UserError(f"experts: source {source!r} (expert {spec.name!r}) is not in the registry")
            if current[source] != spec.name:
                raise UserError(
                    f"experts: source {source!r} belongs to expert {current[source]!r} in the registry, "
                    f"not {spec.name!r}"
                )


def _request_summary(r: dict) -> dict:
    result = r["result"] or {}
    return {
        "id": r["id"],
        "kind": r["kind"],
        "status": r["status"],
        "step": r["step"],
        "created_at": r["created_at"],
        "deadline": r["deadline"],
        "finished_at": r["finished_at"],
        "records": r["payload"].get("records", len(r["payload"].get("sources", []))),
        "version_before": result.get("version_before"),
        "version_after": result.get("version_after"),
        "certificate_hash": result.get("certificate_hash"),
        "error": r["error"],
    }
