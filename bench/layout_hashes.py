"""Per-file sha256 of a tiny training, a forget and a drop: run before and after moving code, on the
same machine, and compare (a refactor must not change one tensor).

    python -m bench.layout_hashes                       # prints the hashes, one line a file
    python -m bench.layout_hashes --keep /tmp/old-run   # also keeps the trained run directory, to
                                                        # load, forget and verify it with later code

Hashes cover every model file and config of each version (manifest.json holds times, so it is
summarised by the keys that do not change from run to run). They are this machine's: compare two
runs on the same machine and torch, never against hashes recorded elsewhere.
"""

import argparse
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from rich.console import Console

from moe_unlearn import Run
from moe_unlearn.config import load_config
from moe_unlearn.data.splits import is_heldout

TINY = Path(__file__).resolve().parent.parent / "configs" / "experiment" / "tiny.yaml"
STABLE_MANIFEST_KEYS = ("version", "parent", "config_sha256", "config_file_sha256", "experts", "sources", "trained")


def version_hashes(run_dir: Path) -> dict[str, str]:
    """{relative path: sha256} of the served version's files, manifest reduced to its stable keys."""
    vdir = run_dir / "versions" / (run_dir / "current").read_text().strip()
    out = {}
    for path in sorted(p for p in vdir.rglob("*") if p.is_file()):
        rel = path.relative_to(vdir).as_posix()
        if rel == "manifest.json":
            manifest = json.loads(path.read_text())
            stable = {k: manifest.get(k) for k in STABLE_MANIFEST_KEYS}
            stable["lineage"] = {p: e["lineage"] for p, e in manifest["files"].items()}
            data = json.dumps(stable, sort_keys=True).encode()
        elif rel.startswith("logs/"):
            continue
        else:
            data = path.read_bytes()
        out[rel] = hashlib.sha256(data).hexdigest()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="copy the trained run directory (before the forget) here")
    args = parser.parse_args()
    quiet = Console(stderr=True, quiet=True)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        run = Run(run_dir, console=quiet)
        run.train(TINY)
        steps = {"train": version_hashes(run_dir)}
        if args.keep:
            shutil.rmtree(args.keep, ignore_errors=True)
            shutil.copytree(run_dir, args.keep)
        experts = run.info()["experts"]
        source = run.registry.sources_of(experts[-1])[0]
        # the first record of the last expert's source that the expert trains on (so a forget retrains)
        cfg = load_config(TINY)
        ids = [i for (i,) in run.registry.db.execute("SELECT id FROM records WHERE source = ? ORDER BY id", (source,))]
        trained = next(i for i in ids if not is_heldout(i, cfg.seed, cfg.data.heldout_fraction))
        run.forget(records=[trained])
        steps["forget"] = version_hashes(run_dir)
        run.drop(source=run.registry.sources_of(experts[1])[0])
        steps["drop"] = version_hashes(run_dir)
    for step, files in steps.items():
        for rel, digest in files.items():
            print(f"{step:7s} {digest}  {rel}")
    combined = hashlib.sha256(json.dumps(steps, sort_keys=True).encode()).hexdigest()
    print(f"all     {combined}")


if __name__ == "__main__":
    main()
