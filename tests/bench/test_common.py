"""bench.common: dictd is ingested as configs/experiment/dictd.yaml declares it (gcide the base)."""

from bench.common import DICTD_CONFIG, ingest_dictd
from bench.utility import DICTD
from moe_unlearn import Run
from tests.bench.test_scaling import write_dictd


def test_dictd_is_ingested_with_the_roles_its_config_declares(tmp_path):
    data = tmp_path / "dictd"
    data.mkdir()
    write_dictd(data, 5)
    run = Run(tmp_path / "run")
    run.init(DICTD_CONFIG)
    seconds = ingest_dictd(run, data, DICTD, DICTD_CONFIG, [])
    assert list(seconds) == list(DICTD)
    assert run.registry.base_sources() == ["gcide"]
    assert sorted(run.registry.experts()) == sorted(set(DICTD) - {"gcide"})
