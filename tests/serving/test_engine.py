"""The decoding engine (moe_unlearn.serving.engine), through its socket as the generation routes use it:
continuous batching that never changes a request's bytes, slots freed by a closed connection, requests
waiting for a slot, and the hot swap (a request finishes on the version it started on; every request
admitted after a switch decodes on the new one)."""

import asyncio
import json
import shutil
import time

import pytest

from moe_unlearn import Run
from moe_unlearn.rundir import read_manifest, switch_current, version_dir
from moe_unlearn.serving.engine import EngineError, collect, decode
from tests.serving.conftest import engine_thread

pytestmark = pytest.mark.usefixtures("one_thread")  # module-scoped, tests/conftest.py


def generate(address, prompt=b"Rain", n=30, temperature=0.9, top_k=0, seed=0):
    header, drawn = asyncio.run(collect(decode(address, prompt, n, temperature, top_k, seed)))
    return header["version"], bytes(drawn.data), drawn.weights()


async def together(address, requests):
    async def one(r):
        header, drawn = await collect(decode(address, *r))
        return header["version"], bytes(drawn.data), drawn.weights()

    return await asyncio.gather(*map(one, requests))


REQUESTS = [(b"Rain", 30, 0.9, 0, s) for s in range(3)] + [(b"x" * 300, 20, 1.3, 5, 7), (b"Preheat", 25, 0.0, 0, 0)]


def test_a_request_gets_the_same_bytes_alone_or_among_15_others(tiny_run_dir, engine_address):
    crowd = REQUESTS + [(b"Forecast " * (i + 1), 40 + i, 1.0, 0, 100 + i) for i in range(11)]
    among = asyncio.run(together(engine_address, crowd))
    for request, got in zip(REQUESTS, among, strict=False):
        assert got == generate(engine_address, *request)  # bytes and every weight, to the last bit
        version, data, _ = got
        assert version == 1 and len(data) == request[1]
        reference = Run(tiny_run_dir).generate(request[0].decode(), request[1], *request[2:])
        assert data.decode("utf-8", errors="replace") == reference["text"]


def test_requests_beyond_the_slots_wait_for_one_and_get_the_same_bytes(tiny_run_dir, engine_address):
    """Five requests on two slots: all finish, each with what it gets alone on that engine (bytes and every
    weight, to the last bit). Against the 16-slot engine (another step shape) the bytes are the same and
    the weights equal up to float rounding: bit-identity is promised within one engine configuration."""
    with engine_thread(tiny_run_dir, slots=2) as (_, address):
        waited = asyncio.run(together(address, REQUESTS))
        assert waited == [generate(address, *request) for request in REQUESTS]
    wide = asyncio.run(together(engine_address, REQUESTS))
    for (version, data, weights), (version16, data16, weights16) in zip(waited, wide, strict=True):
        assert version == version16 and data == data16
        assert weights == pytest.approx(weights16, abs=1e-6)


def test_a_closed_connection_frees_its_slot(tiny_run_dir):
    with engine_thread(tiny_run_dir, slots=1) as (engine, address):

        async def cancel_then_generate():
            long = decode(address, b"Rain", 10**6, 0.9, 0, 1)  # would hold the only slot for minutes
            async for item in long:
                if isinstance(item, list):
                    break
            await long.aclose()
            return await collect(decode(address, b"Rain", 10, 0.9, 0, 2))

        header, drawn = asyncio.run(asyncio.wait_for(cancel_then_generate(), timeout=60))
        assert len(drawn.data) == 10
        assert sum(v.active() for v in engine.versions.values()) == 0


def test_zero_bytes_and_bad_request_lines(engine_address):
    version, data, weights = generate(engine_address, n=0)
    assert version == 1 and data == b"" and set(weights.values()) == {0.0}

    async def raw(line: bytes) -> dict:
        reader, writer = await asyncio.open_unix_connection(engine_address)
        writer.write(line)
        answer = json.loads(await reader.readline())
        writer.close()
        return answer

    assert asyncio.run(raw(b"not json\n"))["status"] == 400
    assert asyncio.run(raw(b'{"prompt": "###", "max_new_bytes": 3}\n'))["status"] == 400


def test_hot_swap_finishes_a_request_on_its_version_and_starts_new_ones_on_the_next(tiny_copy):
    """Version 2 here is a copy of version 1 under another number: the same bytes, told apart by the
    version each answer names."""
    shutil.copytree(version_dir(tiny_copy, 1), version_dir(tiny_copy, 2))
    manifest = read_manifest(version_dir(tiny_copy, 2)) | {"version": 2}
    (version_dir(tiny_copy, 2) / "manifest.json").write_text(json.dumps(manifest))
    with engine_thread(tiny_copy, slots=4) as (engine, address):

        async def swap_mid_request():
            old = decode(address, b"Rain", 200, 0.9, 0, 3)
            header = await anext(old)
            await anext(old)  # decoding has begun on version 1
            switch_current(tiny_copy, 2)
            after = await collect(decode(address, b"Rain", 200, 0.9, 0, 3))
            rest = [item async for item in old]
            return header, rest, after

        header, rest, (after_header, after) = asyncio.run(asyncio.wait_for(swap_mid_request(), timeout=120))
        assert header["version"] == 1 and rest  # it went on after the switch, on version 1
        assert after_header["version"] == 2 and len(after.data) == 200
        deadline = time.monotonic() + 10
        while list(engine.versions) != [2]:  # version 1's decoder goes with its last request
            assert time.monotonic() < deadline, list(engine.versions)
            time.sleep(0.01)
        switch_current(tiny_copy, 7)  # a version that is not there: refused, never an older one
        with pytest.raises(EngineError) as refused:
            generate(address)
        assert refused.value.status == 503 and "no model to serve" in refused.value.message


def test_a_generation_route_is_healthy_only_while_its_engine_answers(tiny_run_dir, tmp_path):
    from moe_unlearn.serving.api import GenerateAPI

    with engine_thread(tiny_run_dir, slots=2) as (_, address):
        assert GenerateAPI(tiny_run_dir, address).health()
    assert not GenerateAPI(tiny_run_dir, address).health()  # the engine is gone: /health says 503
    assert not GenerateAPI(tiny_run_dir, str(tmp_path / "nothing.sock")).health()
