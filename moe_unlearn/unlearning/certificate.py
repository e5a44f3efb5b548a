"""Deletion certificates: what was forgotten (keyed hashes only), what was retrained, and the claim
that the new version is the model training from scratch on the retained records gives.

Certificates are appended to a hash chain in the registry (each entry holds the previous entry's
hash), so an edited or removed entry is evident: `Registry.verify_chain` finds the first bad link.
"""

import hashlib
import json

from moe_unlearn.rundir import BASE_FILE, stage_file
from moe_unlearn.storage.registry import Registry, now
from moe_unlearn.unlearning.requests import deadline_state


def version_summary(manifest: dict | None) -> dict | None:
    """The part of a manifest a certificate pins: number, config hash, environment and file hashes."""
    if manifest is None:
        return None
    return {
        "version": manifest["version"],
        "manifest_sha256": hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest(),
        "config_sha256": manifest["config_sha256"],
        "environment": manifest["environment"],
        "files": {path: entry["sha256"] for path, entry in manifest["files"].items()},
    }


def build_certificate(
    request: dict,
    rows: list[dict],
    merged_with: list[str],
    before: dict | None,
    after: dict | None,
    trained: list[str],
    wall_seconds: float,
    method: str = "exact",
) -> dict:
    """The certificate body (JSON-able, no record text). `method` other than "exact" (gradient ascent,
    nabla-tau: for contrast only) makes it a certificate of an approximate, not oracle-equal, version."""
    experts = sorted(
        {p.removeprefix("experts/").removesuffix(".safetensors") for p in trained if p.startswith("experts/")}
    )
    stage_prefix = stage_file(0).removesuffix("0.safetensors")
    stages = sorted(int(p.removeprefix(stage_prefix).split(".")[0]) for p in trained if p.startswith(stage_prefix))
    base = BASE_FILE in trained
    if after is None:
        statement = "No model had been trained: the records were deleted from the store and nothing was retrained."
    elif not trained:
        statement = (
            f"Version {after['version']} was left unchanged: the forgotten records were held out or otherwise "
            "never trained on, so the served model is already the model trained without them."
        )
    elif method != "exact":
        statement = (
            f"APPROXIMATE: version {after['version']} was made by {method} on the affected experts' current "
            "weights. It is NOT the model that training from scratch on the retained records gives, and the "
            "forgotten records may still be recoverable from it (see `moe-unlearn audit`)."
        )
    else:
        statement = (
            f"Version {after['version']} is bit-identical (sha256 of every tensor, same machine and threads) to "
            f"training from scratch on the retained records with config {after['config_sha256'][:16]} and the "
            "registry's expert order: every file is a pure function of the config, its seed and its exact "
            "record list, and only the files whose record lists changed were retrained."
        )
        if base:
            statement += (
                " The records included base-source records: the base model was retrained, and with it every "
                "expert (they branch from it): a full rebuild."
            )
    deadline, completed = request["deadline"], now()
    return {
        "type": "moe-unlearn deletion certificate",
        "request_id": request["id"],
        "kind": request["kind"],
        "requested_at": request["created_at"],
        "deadline": deadline,
        "completed_at": completed,
        "met_deadline": None if deadline is None else deadline_state(deadline, "done", completed) == "met",
        "wall_seconds": round(wall_seconds, 2),
        "scope": {k: v for k, v in request["payload"].items() if k in ("how", "source", "sources", "experts")},
        "method": method,
        "oracle_equal": method == "exact",
        "records": rows,
        "record_count": len(rows),
        "merged_with": merged_with,
        "retrained": {
            "base": base,
            "full_rebuild": base,
            "experts": experts,
            "router_stages": stages,
            "files": trained,
        },
        "version_before": before,
        "version_after": after,
        "config_sha256": after["config_sha256"] if after else None,
        "statement": statement,
    }


def certify(registry: Registry, request_id: str, body: dict) -> str:
    """Append the certificate to the chain (call inside a transaction); returns its chain hash."""
    return registry.append_certificate(request_id, body)


def summary(body: dict, chain_hash: str) -> str:
    """A few readable lines for the terminal."""
    retrained = body["retrained"]
    before = body["version_before"]["version"] if body["version_before"] else "-"
    after = body["version_after"]["version"] if body["version_after"] else "-"
    lines = [
        f"deletion certificate {body['request_id']} ({body['kind']}), chain hash {chain_hash[:16]}",
        f"  records forgotten: {body['record_count']:,} (named by keyed hash only)",
        f"  retrained: {'the base model (a full rebuild); ' if retrained.get('base') else ''}"
        f"experts {', '.join(retrained['experts']) or 'none'}; "
        f"router stages {', '.join(map(str, retrained['router_stages'])) or 'none'}",
        f"  version {before} -> {after} in {body['wall_seconds']:.1f} s"
        + (f"; deadline {body['deadline']} {'met' if body['met_deadline'] else 'MISSED'}" if body["deadline"] else ""),
        f"  {body['statement']}",
    ]
    return "\n".join(lines)
