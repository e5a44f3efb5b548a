"""bench.scaling on dictd: the first K dictionaries, the same seeded share of the total from each."""

import json
from pathlib import Path

from bench.scaling import dictd_sample
from bench.utility import DICTD


def write_dictd(folder: Path, entries: int) -> None:
    for name in DICTD:
        lines = (json.dumps({"id": f"{name}:word{i}:{i}", "text": f"{name} entry {i}"}) for i in range(entries))
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n")


def test_each_of_the_first_k_dictionaries_gives_the_same_seeded_share(tmp_path):
    data, work = tmp_path / "dictd", tmp_path / "work"
    data.mkdir()
    work.mkdir()
    write_dictd(data, 50)
    sample = dictd_sample(data, 3, 60, seed=1234, work=work)
    assert list(sample) == list(DICTD[:3])
    assert all(len(records) == 20 for records in sample.values())
    written = [json.loads(line)["id"] for line in (work / f"{DICTD[0]}.jsonl").read_text().splitlines()]
    assert written == [r.id for r in sample[DICTD[0]]]
    assert written != sorted(written, key=lambda i: int(i.split(":")[-1]))  # a random sample, not the first 20
    again = dictd_sample(data, 3, 60, seed=1234, work=work)
    assert [r.id for r in again[DICTD[0]]] == written
