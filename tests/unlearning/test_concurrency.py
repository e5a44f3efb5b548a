"""8 forgets of different records started at once from separate processes on one run directory: all
finish, serialised by the run directory's lock (requests that arrive while a job runs wait and may merge
into the next job), none lost; the certificate chain is intact and in order; the final model equals the
oracle of the union. (A forget under server load: tests/serving/test_server.py and bench/serve_load.py.)"""

import json
import subprocess
import sys

from moe_unlearn import Run
from tests.conftest import REPO
from tests.unlearning.test_oracle import assert_equal_to_oracle, ids_of


def test_eight_forgets_at_once_all_finish_in_order_and_equal_the_oracle_of_their_union(tiny_copy, tmp_path):
    trained = [ids_of(tiny_copy, s)[0] for s in ("recipes", "weather", "code")]
    records = [trained[i % 3][i // 3 + 2] for i in range(8)]  # spread over the three experts
    command = [sys.executable, "-m", "moe_unlearn", "forget", "--run-dir", str(tiny_copy), "--json", "--record"]
    procs = [
        subprocess.Popen([*command, r], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for r in records
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    certificates = [json.loads(out) for out, _ in outputs]
    run = Run(tiny_copy)
    assert sorted(c["request_id"] for c in certificates) == sorted(r["id"] for r in run.requests())
    assert all(r["status"] == "done" for r in run.requests()) and len(run.requests()) == 8  # none lost
    assert run.registry.record_rows(records) == {}  # every record gone from the store
    chain = run.registry.certificates()
    assert [c["seq"] for c in chain] == list(range(1, 9)) and run.info()["certificate_chain_intact"]
    versions = [c["body"]["version_after"]["version"] for c in chain]
    assert versions == sorted(versions)  # certified in the order their versions went live
    assert_equal_to_oracle(tiny_copy, tmp_path)  # the model trained from scratch without all 8
