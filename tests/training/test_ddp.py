"""DDP: `train.py` with two CPU processes (gloo) trains one version that loads and scores; the two
processes share every fit's examples out exactly, and only rank 0 writes."""

import json
import subprocess
import sys

import pytest

from moe_unlearn import Run, UserError
from moe_unlearn.config import load_config
from moe_unlearn.data.datamodule import expert_dataset, keys_digest
from moe_unlearn.rundir import REGISTRY_FILES
from moe_unlearn.storage.keys import KEY_FILE
from moe_unlearn.storage.registry import Registry
from moe_unlearn.training.distributed import is_primary
from moe_unlearn.training.plan import plan
from moe_unlearn.training.trainer import EXAMPLES_FILE
from tests.conftest import REPO, TINY

# Two domains: two expert fits and one router-stage fit. One whole epoch per expert, so each expert's
# log covers its full example set.
OVERRIDES = ["data.corpus.domains=2", "train.expert.max_steps=-1", "train.expert.max_epochs=1", "trainer.threads=1"]
DDP = ["trainer.strategy=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ddp") / "run"
    args = ["train.py", "--config", TINY, "--run-dir", run_dir, "--json", *DDP, *OVERRIDES]
    done = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir, json.loads(done.stdout)  # one JSON document: the follower prints nothing


def test_two_processes_share_every_expert_epoch_exactly(ddp_run):
    run_dir, manifest = ddp_run
    cfg = load_config(TINY, [*DDP, *OVERRIDES])
    jobs, _ = plan(Registry(run_dir / "registry.db"), cfg)
    logs = run_dir / "versions" / str(manifest["version"]) / "logs"
    for job in (j for j in jobs if j.kind == "expert"):
        keys = expert_dataset(job.records, cfg.model.expert.block_size).keys
        seen = json.loads((logs / f"expert-{job.expert}" / EXAMPLES_FILE).read_text())
        assert seen["world_size"] == 2
        assert seen["data"] == {"examples": len(keys), "keys_digest": f"{keys_digest(keys):016x}"}
        [epoch] = seen["epochs"]
        ranks = epoch["ranks"]
        assert [r["rank"] for r in ranks] == [0, 1]
        assert ranks[0]["batches"] == ranks[1]["batches"] > 0  # DDP steps together
        assert all(r["examples"] > 0 for r in ranks) and ranks[0]["keys_digest"] != ranks[1]["keys_digest"]
        # Counts add up to the set's size and digests (sums of key hashes) to the digest of the whole
        # set: together the two shares are exactly the expert's examples, so they are disjoint.
        assert sum(r["examples"] for r in ranks) == len(keys)
        assert sum(int(r["keys_digest"], 16) for r in ranks) % 2**63 == keys_digest(keys)


def test_router_stage_shares_its_epochs_too(ddp_run):
    run_dir, manifest = ddp_run
    seen = json.loads((run_dir / "versions" / str(manifest["version"]) / "logs/router-1" / EXAMPLES_FILE).read_text())
    first = seen["epochs"][0]["ranks"]  # max_steps may end a later epoch early
    assert first[0]["batches"] == first[1]["batches"]
    assert sum(r["examples"] for r in first) == seen["data"]["examples"]
    assert f"{sum(int(r['keys_digest'], 16) for r in first) % 2**63:016x}" == seen["data"]["keys_digest"]


def test_result_loads_and_scores_and_only_rank_0_wrote(ddp_run):
    run_dir, manifest = ddp_run
    assert manifest["version"] == 1 and manifest["experts"] == ["recipes", "weather"]
    assert sorted(p.name for p in (run_dir / "versions").iterdir()) == ["1"]  # no build by the follower
    assert {p.name for p in run_dir.iterdir()} <= {"current", "lock", "versions", KEY_FILE, *REGISTRY_FILES}
    assert "devices: 2" in (run_dir / "versions/1/config.yaml").read_text()  # the process count is config
    result = Run(run_dir).score("Preheat the oven to 200 degrees.")
    assert result["version"] == 1 and 0 < result["bits_per_byte"] < 8


def test_only_rank_0_of_a_multi_process_config_writes(monkeypatch):
    one, two = load_config(TINY), load_config(TINY, DDP)
    assert is_primary(one) and is_primary(two)
    for name in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID"):
        with monkeypatch.context() as env:
            env.setenv(name, "1")
            assert is_primary(one) and not is_primary(two)


def test_entries_that_cannot_start_followers_refuse_a_multi_process_config(tmp_path):
    # The library's Run.train, `update`, `forget` run in one process: Lightning would start copies of
    # that command, which cannot follow rank 0's build, and rank 0 would wait for them.
    with pytest.raises(UserError, match="only be started by `python train.py`"):
        Run(tmp_path / "run").train(TINY, DDP)


def test_with_a_base_rank_0_trains_the_router_head_alone(tmp_path):
    """A FeatureRouter's stages are not DDP fits (training/trainer.py, `fit_head`): the follower skips
    them, the build finishes and its router stage was trained by one process."""
    run_dir = tmp_path / "run"
    overrides = [*OVERRIDES, "data.corpus.base_domains=1", "trainer.log_every_n_steps=1"]
    args = ["train.py", "--config", TINY, "--run-dir", run_dir, "--json", *DDP, *overrides]
    done = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    logs = run_dir / "versions" / str(json.loads(done.stdout)["version"]) / "logs"
    assert json.loads((logs / "expert-recipes" / EXAMPLES_FILE).read_text())["world_size"] == 2
    assert (logs / "router-1" / "metrics.csv").exists() and not (logs / "router-1" / EXAMPLES_FILE).exists()
    assert 0 < Run(run_dir).score("Preheat the oven to 200 degrees.")["bits_per_byte"] < 8
