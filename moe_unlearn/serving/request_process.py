"""A forget or drop started by the server, in its own process:
`python -m moe_unlearn.serving.request_process`.

It reads {"kind": "forget" | "drop", "run_dir": ..., "args": {...}} on stdin (never on the command line,
where a `match` text would show in `ps`), queues the request exactly as the CLI does
(`moe_unlearn.unlearning.forget.forget` or `drop` with wait=False), writes ONE JSON line on stdout at
once (the queued request, a dry run's answer, or {"error": ..., "status": 4xx}) and then carries the
request out: retrain, switch `current`, scrub, certify. The server answers with that first line and
leaves the rest running; the workers pick the new version up at their next batch. Exit code 0 done,
2 refused or failed.
"""

import json
import sys
from pathlib import Path

from rich.console import Console

from moe_unlearn.errors import UserError
from moe_unlearn.rundir import open_registry
from moe_unlearn.unlearning.forget import drop, forget, result

PENDING = ("pending", "running")


def main() -> int:
    spec = json.loads(sys.stdin.read())
    console = Console(stderr=True)
    run_dir = Path(spec["run_dir"])
    submit = {"forget": forget, "drop": drop}[spec["kind"]]
    try:
        registry = open_registry(run_dir, None)
        queued = submit(run_dir, registry, console, **spec["args"], wait=False)
    except UserError as e:
        message = str(e)
        _answer({"error": message, "status": 404 if "unknown" in message or "matches no record" in message else 400})
        return 2
    _answer(queued)
    if queued.get("status") not in PENDING:  # a dry run, or a request that was already done
        return 0
    try:
        result(run_dir, registry, console, queued["request_id"], wait=True)
    except UserError as e:
        console.print(f"error: request {queued['request_id']}: {e}", highlight=False, markup=False)
        return 2
    return 0


def _answer(result: dict) -> None:
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
