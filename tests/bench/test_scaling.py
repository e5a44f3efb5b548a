"""bench.scaling: on dictd the first K dictionaries, the same seeded share of the total from each; the router
agreement it measures after each forget."""

import json
from pathlib import Path

from bench.scaling import AGREEMENT_PREFIXES, dictd_sample, retained_prefixes, top1_experts
from bench.utility import DICTD
from moe_unlearn.data.records import Record
from moe_unlearn.models.loading import load_version
from moe_unlearn.rundir import read_current


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


def test_top1_experts_reads_each_prefix_length_off_one_causal_pass(tiny_run_dir):
    model, _ = load_version(tiny_run_dir, read_current(tiny_run_dir))
    keep = {
        "a": [
            Record(f"a{i}", "a", f"Forecast {i}: sunny and dry, light wind from the west, 21 C at noon.")
            for i in range(4)
        ],
        "b": [
            Record("b0", "b", "short"),
            Record("b1", "b", "def f(x):\n    return x * 2  # doubles the input value, then returns it"),
        ],
    }
    texts = retained_prefixes(keep, skip=1, n=2)
    assert texts == [r.text.encode() for r in keep["a"][1:3]] + [keep["b"][1].text.encode()]  # skip, cap, length
    top = top1_experts(model, texts)
    for n in AGREEMENT_PREFIXES:  # the same expert route() picks after each whole prefix
        expected = [model.names[i] for i in model.route([t[:n] for t in texts]).argmax(-1).tolist()]
        assert top[n] == expected
