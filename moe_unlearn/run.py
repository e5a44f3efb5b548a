"""The public Python API: `Run(run_dir)` with the same verbs as the CLI.

    from moe_unlearn import Run
    run = Run("checkpoints/default")
    run.train(overrides=["train.expert.max_steps=200"])
    run.generate("Preheat the oven", max_new_bytes=80, seed=1)["text"]
    run.score("Light rain in Lisbon")["bits_per_byte"]

A run directory (its layout: moe_unlearn/rundir.py) is created by the first `train`, `init` or
`ingest`, which writes the built-in corpus into the store (unless `data.builtin=false`). Each verb
takes the lock it needs and hands the work to the module that owns it.
"""

import json
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from moe_unlearn import rundir
from moe_unlearn.audit.canaries import canary_report
from moe_unlearn.audit.request import audit_request
from moe_unlearn.config import Config, load_config
from moe_unlearn.errors import UserError, utf8
from moe_unlearn.models.loading import CurrentModel
from moe_unlearn.models.moe import MixtureOfExperts
from moe_unlearn.rundir import DEFAULT_RUN_DIR
from moe_unlearn.storage.builds import served_config
from moe_unlearn.storage.registry import Registry, check_name, now
from moe_unlearn.storage.sources import check_role, ingest_files
from moe_unlearn.training.build import build_version
from moe_unlearn.training.bundles import export_bundle, import_bundle, read_bundle
from moe_unlearn.training.evaluate import evaluate
from moe_unlearn.training.plan import check_expert_map, plan
from moe_unlearn.unlearning import forget as requests
from moe_unlearn.unlearning.job import run_queue
from moe_unlearn.unlearning.oracle import verify_against_oracle


class Run:
    """A run directory: its registry, its versions, and the model named by `current`."""

    def __init__(self, run_dir: str | Path = DEFAULT_RUN_DIR, console: Console | None = None):
        self.run_dir = Path(run_dir)
        self.console = console or Console(stderr=True)
        self._registry: Registry | None = None
        self._served = CurrentModel(self.run_dir)

    # --- training and data ------------------------------------------------------------------------

    def train(self, config: str | Path | None = None, overrides: Sequence[str] = ()) -> dict:
        """Train (or bring up to date) the composed model; returns the new version's manifest. With
        `train.experts` naming a share of experts that this run directory lacks the others of, trains
        those into the next version without making it live (see `export_expert`) and returns
        {"version", "live": False, "trained", "remaining"}."""
        cfg = load_config(config, overrides)
        with rundir.lock(self.run_dir, create=True):
            registry = self._open(cfg)
            check_expert_map(registry, cfg)
            return build_version(self.run_dir, registry, cfg, only=cfg.train.experts, console=self.console)

    def ingest(
        self,
        source: str,
        files: Sequence[str | Path],
        *,
        expert: str | None = None,
        role: str | None = None,
        id_field: str = "id",
        text_field: str = "text",
        allow_forgotten: bool = False,
    ) -> dict:
        """Add the records of `.txt`/`.jsonl` files to `source` (created if new, with `role`, default expert,
        and an expert of the same name unless `expert` is given), all or nothing. The next `train` trains
        what changed."""
        check_name("source", source)
        check_role(role)  # before a new run directory is created
        created = not self.exists()
        there = set(self.run_dir.iterdir()) if self.run_dir.is_dir() else None
        try:
            with rundir.lock(self.run_dir, create=True):
                registry = self._open(load_config() if created else None)  # new: the default built-in corpus
                fields = {"id_field": id_field, "text_field": text_field, "allow_forgotten": allow_forgotten}
                result = ingest_files(registry, source, files, expert=expert, role=role, console=self.console, **fields)
        except UserError:
            if created:  # a refused first ingest leaves no run directory behind
                rundir.remove_new(self.run_dir, there)
            raise
        if created:  # said plainly: a mistyped --run-dir makes a new run with the built-in corpus
            builtin = [s for s in registry.sources() if s.builtin]
            records = sum(s.records for s in builtin)
            result["created_run_dir"] = {"builtin_sources": len(builtin), "builtin_records": records}
        return result

    def init(self, config: str | Path | None = None, overrides: Sequence[str] = ()) -> None:
        """Create the run directory (with the built-in corpus unless `data.builtin=false`) without training."""
        cfg = load_config(config, overrides)
        with rundir.lock(self.run_dir, create=True):
            self._open(cfg)

    def update(self) -> dict:
        """Finish pending forget requests, then retrain the experts whose sources gained records (and the
        router stages from the earliest of them) with the served version's config."""
        with rundir.lock(self.run_dir, wait=True, console=self.console):
            registry = self._open(None)
            run_queue(self.run_dir, registry, self.console)
            return build_version(self.run_dir, registry, self._served_config(), console=self.console)

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
        with rundir.lock(self.run_dir, create=True):
            registry = self._open(cfg)
            check_expert_map(registry, cfg)
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

    # --- forgetting -------------------------------------------------------------------------------

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
        args = {"records": records, "match": match, "ids_file": ids_file, "source": source, "audit": audit}
        return requests.forget(
            self.run_dir,
            self._open(None),
            self.console,
            **args,
            dry_run=dry_run,
            deadline=deadline,
            wait=wait,
            method=method,
        )

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
        return requests.drop(
            self.run_dir,
            self._open(None),
            self.console,
            source=source,
            expert=expert,
            dry_run=dry_run,
            deadline=deadline,
            wait=wait,
        )

    def resume(self, request_id: str) -> dict:
        """Finish a pending or interrupted request (and any others waiting); returns its certificate."""
        return requests.result(self.run_dir, self._open(None), self.console, request_id, wait=True)

    def requests(self) -> list[dict]:
        """Every forget and drop request with its status, deadline and certificate hash."""
        listed = [requests.request_summary(r) for r in self._open(None).requests()]
        running = [r for r in listed if r["status"] == "running"]
        if running:  # with nobody holding the lock, its job was killed: the next forget, drop, update or
            dead = not rundir.job_running(self.run_dir)  # --resume finishes it
            for r in running:
                r["interrupted"] = dead
        return listed

    def certificate(self, request_id: str) -> dict:
        """The certificate of a finished request, with its place in the hash chain."""
        return requests.certificate(self._open(None), request_id)

    def verify(self, work_dir: str | Path | None = None) -> dict:
        """Train the oracle (from scratch, fresh directory and process, retained records only) and
        compare it with the served version tensor for tensor."""
        with rundir.lock(self.run_dir, wait=True, console=self.console):
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
        return audit_request(self.run_dir, self._open(None), request_id, Path(out_dir) if out_dir else None)

    # --- inspection and inference -----------------------------------------------------------------

    def info(self) -> dict:
        """Sources, experts (in stage order), record counts, the current version and its manifest."""
        if not self.exists():
            raise UserError(f"no run directory at {self.run_dir}: run `moe-unlearn train` first")
        registry = self._open(None)
        return {
            **rundir.describe(self.run_dir, registry),
            "requests": self.requests(),
            "certificate_chain_intact": registry.verify_chain() is None,
        }

    def load(self) -> tuple[MixtureOfExperts, dict]:
        """The model named by `current` (every file checked against the manifest), cached per version."""
        return self._served.get()

    def generate(
        self, prompt: str, max_new_bytes: int = 200, temperature: float = 0.8, top_k: int = 0, seed: int = 0
    ) -> dict:
        """Continue `prompt`; the result names the experts that produced it and the version."""
        if max_new_bytes < 0:
            raise UserError("max_new_bytes must be >= 0")
        model, manifest = self.load()
        new, weights = model.generate(utf8(prompt, "the prompt"), max_new_bytes, temperature, top_k, seed)
        return {
            "prompt": prompt,
            "text": new.decode("utf-8", errors="replace"),
            "expert_weights": {k: round(v, 4) for k, v in weights.items()},
            "mixing": model.settings,
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
        data = utf8(text, "the text to score")
        model, manifest = self.load()
        result = model.score(data)
        result["expert_weights"] = {k: round(v, 4) for k, v in result["expert_weights"].items()}
        return {**result, "version": manifest["version"]}

    def canaries(self, ids: Sequence[str] = (), candidates: int = 4096) -> dict:
        """How well the served model knows each built-in canary's secret (all, or those named by `ids`):
        copies still trained on, greedy continuation of its prefix, the secret's rank among `candidates`
        random secrets and its exposure in bits. For seeing forgetting happen; `forget --audit` measures it."""
        cfg = self._served_config()
        return canary_report(self.load, self._open(None), cfg, ids, candidates)

    # --- the run directory ------------------------------------------------------------------------

    def exists(self) -> bool:
        return rundir.exists(self.run_dir)

    @property
    def registry(self) -> Registry:
        """The run directory's registry, for reading its sources, experts and records (benchmarks, tools);
        change them through `ingest`, `forget` and `drop`, which keep versions and requests consistent."""
        return self._open(None)

    def _served_config(self) -> Config:
        cfg = served_config(self.run_dir)
        if cfg is None:
            raise UserError(f"no trained model in {self.run_dir}: run `moe-unlearn train` first")
        return cfg

    def _open(self, cfg: Config | None) -> Registry:
        """The registry (opened once); a new run directory is created from `cfg` (see rundir.open_registry)."""
        if self._registry is None:
            self._registry = rundir.open_registry(self.run_dir, cfg)
        elif cfg is not None:
            rundir.check_corpus(self._registry, self.run_dir, cfg)
        return self._registry
