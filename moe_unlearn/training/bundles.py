"""Expert bundles: move a trained expert between run directories (experts trained on separate machines).

A bundle is a directory of two files: `expert.safetensors`, the expert's file byte for byte, and
`bundle.json`, its manifest entry (sha256, lineage, config hash, digest of its training-record ids,
the torch version, CPU flags and threads it was trained with), the resolved config and its origin.
Only safetensors and JSON are read: nothing is unpickled.

`export_bundle` takes the newest trained copy of an expert: from the unfinished build a
`train.experts=[...]` run leaves, or from the served version. `import_bundle` refuses a bundle whose
sha256 does not match, or whose lineage is not what this run would train for that expert (config,
records), and adds the file to this run's unfinished build as if it had been trained here: the next
`train` keeps it and trains only the other experts and the router stages, then goes live.
"""

import json
import os
import shutil
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from moe_unlearn.config import NON_SEMANTIC_KEYS, TOP_LEVEL_NON_SEMANTIC, Config, config_from_yaml, config_hash
from moe_unlearn.data.splits import ids_digest
from moe_unlearn.errors import UserError
from moe_unlearn.rundir import read_current, read_manifest, version_dir
from moe_unlearn.storage.builds import add_finished_file, trained_file
from moe_unlearn.storage.registry import Registry, now
from moe_unlearn.storage.versions import load_tensors
from moe_unlearn.training.build import remaining
from moe_unlearn.training.plan import Job, plan

FORMAT = "moe-unlearn expert bundle 1"
MANIFEST = "bundle.json"
TENSORS = "expert.safetensors"
ENTRY_KEYS = ("sha256", "lineage", "kind", "expert", "records", "records_sha256", "config_sha256")


def export_bundle(run_dir: Path, registry: Registry, name: str, out: Path) -> dict:
    """Write expert `name`'s newest trained file and its lineage to the new directory `out`."""
    _check_known(registry, name, run_dir)
    if out.exists():
        raise UserError(f"{out} already exists: export to a new path")
    found = trained_file(run_dir, _path(name))
    if found is None:
        raise UserError(f"expert {name!r} has no trained weights in {run_dir}: train it first (train.experts=[{name}])")
    file, entry, config = found
    load_tensors(file, entry["sha256"])  # refuse to export a corrupt file
    bundle = {
        "format": FORMAT,
        "expert": name,
        "file": entry,
        "config": config,
        "exported_at": now(),
        "exported_from": str(Path(run_dir).resolve()),
    }
    tmp = out.with_name(f"{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copyfile(file, tmp / TENSORS)
    (tmp / MANIFEST).write_text(json.dumps(bundle, indent=2, sort_keys=True))
    os.replace(tmp, out)  # the bundle appears whole or not at all
    return {"expert": name, "bundle": str(out), **{k: entry[k] for k in ("sha256", "lineage", "records")}}


def import_bundle(run_dir: Path, registry: Registry, cfg: Config, bundle_dir: Path, bundle: dict, data: bytes) -> dict:
    """Check a bundle (from `read_bundle`) against what this run would train for its expert under `cfg`
    and add it to the unfinished build of `cfg`. Returns the build's number and what it still trains."""
    name, entry = bundle["expert"], bundle["file"]
    _check_known(registry, name, run_dir)
    job = next(j for j in plan(registry, cfg)[0] if j.path == _path(name))
    _check_lineage(bundle, job, cfg, bundle_dir)
    result = {"expert": name, "bundle": str(bundle_dir), "sha256": entry["sha256"], "lineage": entry["lineage"]}
    current = read_current(run_dir)
    served = read_manifest(version_dir(run_dir, current))["files"] if current is not None else {}
    if served.get(job.path, {}).get("lineage") == job.lineage:
        return {**result, "imported": False, "version": current, "live": True, "remaining": []}
    imported = {"at": now(), "from": bundle.get("exported_from"), "trained_in_version": entry.get("trained_in_version")}
    n = add_finished_file(run_dir, cfg, job.path, data, {**entry, "imported": imported})
    return {**result, "imported": True, "version": n, "live": False, "remaining": remaining(run_dir, registry, cfg)}


def read_bundle(bundle_dir: Path) -> tuple[dict, bytes]:
    """bundle.json, checked for the keys an import relies on, and the expert file's bytes, checked
    against its sha256 (one-line errors for anything else)."""
    path = Path(bundle_dir) / MANIFEST
    if not path.is_file():
        raise UserError(f"no expert bundle at {bundle_dir} (expected {path}; see `moe-unlearn expert export`)")
    try:
        bundle = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"corrupt bundle manifest {path}: not valid JSON") from None
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        raise UserError(f"{path} is not a moe-unlearn expert bundle ({FORMAT!r})")
    entry = bundle.get("file")
    if not isinstance(entry, dict) or not all(isinstance(bundle.get(k), str) for k in ("expert", "config")):
        raise UserError(f"corrupt bundle manifest {path}: it needs `expert`, `config` and `file`")
    missing = [k for k in ENTRY_KEYS if k not in entry]
    if missing:
        raise UserError(f"corrupt bundle manifest {path}: its file entry lacks {', '.join(missing)}")
    if entry["kind"] != "expert" or entry["expert"] != bundle["expert"]:
        raise UserError(f"corrupt bundle manifest {path}: its file is not expert {bundle['expert']!r}")
    tensors = Path(bundle_dir) / TENSORS
    load_tensors(tensors, entry["sha256"])  # names a tampered or missing file
    return bundle, tensors.read_bytes()


def _check_lineage(bundle: dict, job: Job, cfg: Config, bundle_dir: Path) -> None:
    """The bundle's expert must be the file this run would train: same config hash, same record ids."""
    entry = bundle["file"]
    if entry["config_sha256"] != config_hash(cfg):
        differs = _config_differences(bundle["config"], cfg) or [f"config sha256 {entry['config_sha256'][:12]}"]
        raise UserError(
            f"bundle {bundle_dir} was trained with another config ({'; '.join(differs)}): "
            "import with the --config and overrides this run trains with"
        )
    ours = ids_digest(r.id for r in job.records)
    if entry["records_sha256"] != ours:
        raise UserError(
            f"bundle {bundle_dir}: expert {job.expert!r} was trained on {entry['records']:,} records "
            f"(ids sha256 {entry['records_sha256'][:12]}), this run would train it on {len(job.records):,} "
            f"(ids sha256 {ours[:12]}): the run directories hold different records"
        )
    if entry["lineage"] != job.lineage:
        raise UserError(f"bundle {bundle_dir}: lineage {entry['lineage'][:12]} is not this run's {job.lineage[:12]}")


def _config_differences(bundle_config: str, cfg: Config) -> list[str]:
    """`key: bundle value -> ours` for every key of the config hash that differs."""
    try:
        theirs = _flat(OmegaConf.to_container(OmegaConf.structured(config_from_yaml(bundle_config))))
    except (OmegaConfBaseException, ValueError):
        return []
    ours = _flat(OmegaConf.to_container(OmegaConf.structured(cfg)))
    ignored = {".".join(k) for k in NON_SEMANTIC_KEYS} | set(TOP_LEVEL_NON_SEMANTIC)
    keys = [k for k in sorted(ours.keys() | theirs.keys()) if not any(k == i or k.startswith(f"{i}.") for i in ignored)]
    return [f"{k}: {theirs.get(k)} in the bundle, {ours.get(k)} here" for k in keys if theirs.get(k) != ours.get(k)]


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _check_known(registry: Registry, name: str, run_dir: Path) -> None:
    if name not in registry.experts():
        raise UserError(f"unknown expert {name!r}: {run_dir} has {registry.experts()}")


def _path(name: str) -> str:
    return f"experts/{name}.safetensors"
