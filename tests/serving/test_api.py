"""The LitAPI classes in this process, without HTTP: /score with batch size 1 (predict gets one request)
and > 1 (a list, returned as a list) gives the same results, and the same as `Run`; the generation
routes, async clients of a decoding engine (a thread here), give a request the same bytes alone or among
others, and `Run.generate`'s; the served model follows the `current` pointer and never falls back."""

import asyncio
import shutil

import pytest
from fastapi import HTTPException

from moe_unlearn import Run
from moe_unlearn.rundir import read_current, switch_current, version_dir
from moe_unlearn.serving.api import GenerateAPI, GenerateStreamAPI, ScoreAPI, ServedModel
from moe_unlearn.serving.openai_api import CompletionsAPI
from moe_unlearn.serving.schemas import CompletionRequest, GenerateRequest, ScoreRequest

TEXTS = ["Rain later in Porto.", "Preheat the oven to 200 C and", "x", "The Licensee shall pay all fees " * 5]


pytestmark = pytest.mark.usefixtures("one_thread")  # module-scoped, tests/conftest.py


def ready(api):
    api.setup("cpu")
    return api


def call(api, request):
    """decode -> predict -> encode for one request, as LitServe's loop does with batching off."""
    return api.encode_response(api.predict(api.decode_request(request)))


def call_batch(api, requests):
    """The same for a batch: predict takes a list and must return a list."""
    outputs = api.predict([api.decode_request(r) for r in requests])
    assert isinstance(outputs, list) and len(outputs) == len(requests)
    return [api.encode_response(o) for o in outputs]


def test_score_batched_equals_one_at_a_time_and_run_score(tiny_run_dir):
    alone = ready(ScoreAPI(tiny_run_dir, max_batch_size=1))
    together = ready(ScoreAPI(tiny_run_dir, max_batch_size=4))
    requests = [ScoreRequest(text=t) for t in TEXTS]
    batched = call_batch(together, requests)
    for request, got in zip(requests, batched, strict=True):
        single = call(alone, request)
        reference = Run(tiny_run_dir).score(request.text)
        assert got["version"] == single["version"] == reference["version"] == 1
        assert got["bytes"] == single["bytes"] == len(request.text.encode())
        assert got["bits_per_byte"] == pytest.approx(single["bits_per_byte"], rel=1e-5)
        assert got["bits_per_byte"] == pytest.approx(reference["bits_per_byte"], rel=1e-5)
        assert got["expert_weights"] == pytest.approx(reference["expert_weights"], abs=2e-4)
        assert got["experts"] == [e for e, w in sorted(got["expert_weights"].items(), key=lambda kv: -kv[1]) if w > 0]


def run_async(api, request):
    """decode -> predict -> encode for one request of an async route (the generation routes)."""

    async def go():
        output = api.predict(await api.decode_request(request))
        if api.stream:
            return [line async for line in api.encode_response(output)]
        return await api.encode_response(await output)

    return asyncio.run(go())


def run_together(api, requests):
    """The same for many requests at once, as one worker carries them (the engine decodes them together)."""

    async def go():
        async def one(request):
            return await api.encode_response(await api.predict(await api.decode_request(request)))

        return await asyncio.gather(*map(one, requests))

    return asyncio.run(go())


SAMPLED = [
    GenerateRequest(prompt=p, max_new_bytes=24, temperature=t, top_k=k, seed=s)
    for p, t, k, s in [("Rain", 0.9, 0, 1), ("Rain", 0.9, 0, 2), ("Preheat", 0.0, 0, 5), ("x", 1.5, 8, 1)]
]


def test_generate_same_seed_same_text_alone_and_among_15_others(tiny_run_dir, engine_address):
    api = ready(GenerateAPI(tiny_run_dir, engine_address))
    crowd = SAMPLED + [GenerateRequest(prompt="Forecast" * (n + 1), max_new_bytes=40, seed=n) for n in range(12)]
    together = run_together(api, crowd)
    for request, got in zip(SAMPLED, together, strict=False):
        assert got == run_async(api, request)  # to the last digit of every weight
        reference = Run(tiny_run_dir).generate(
            request.prompt, request.max_new_bytes, request.temperature, request.top_k, request.seed
        )
        assert got["text"] == reference["text"]  # the engine's batched steps and `generate`'s own: same bytes
        assert got["expert_weights"] == pytest.approx(reference["expert_weights"], abs=2e-4)
        assert got["version"] == 1 and got["mixing"] == reference["mixing"]
    assert together[0]["text"] != together[1]["text"]  # the seed is per request


def test_stream_pieces_join_to_the_generated_text(tiny_run_dir, engine_address):
    stream = ready(GenerateStreamAPI(tiny_run_dir, engine_address))
    plain = ready(GenerateAPI(tiny_run_dir, engine_address))
    for seed in range(4):
        request = GenerateRequest(prompt="Forecast", max_new_bytes=30, temperature=2.0, seed=seed)  # hot: odd bytes
        lines = run_async(stream, request)
        assert all(line["version"] == 1 for line in lines)
        assert lines[-1]["done"] is True and lines[-1]["bytes"] == 30
        expected = run_async(plain, request)
        assert "".join(line["text"] for line in lines) == expected["text"]
        assert lines[-1]["expert_weights"] == expected["expert_weights"]


def test_completions_are_openai_shaped_and_stop_at_a_stop_string(tiny_run_dir, engine_address):
    api = ready(CompletionsAPI(tiny_run_dir, engine_address))
    free = CompletionRequest(prompt="Rain", max_tokens=20, temperature=0.0)
    full = run_async(api, free)
    text = full["choices"][0]["text"]
    assert full["object"] == "text_completion" and full["choices"][0]["finish_reason"] == "length"
    assert full["usage"] == {"prompt_tokens": 4, "completion_tokens": 20, "total_tokens": 24}
    assert full["version"] == 1 and full["system_fingerprint"] == "moe-unlearn-v1"
    assert text == Run(tiny_run_dir).generate("Rain", 20, temperature=0.0)["text"]
    stop = text[3:5]
    cut = run_async(api, CompletionRequest(prompt=["Rain"], max_tokens=20, temperature=0.0, stop=stop))
    assert cut["choices"][0] == {"index": 0, "text": text[: text.find(stop)], "logprobs": None, "finish_reason": "stop"}
    # the request ended at the stop string: its usage counts the bytes drawn up to there
    assert cut["usage"]["completion_tokens"] == len(text[: text.find(stop) + len(stop)].encode())


def test_served_model_follows_the_pointer_and_never_falls_back(tiny_run_dir, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run_dir, run_dir)
    served = ServedModel(run_dir)
    model, version = served.get()
    assert version == 1 and served.get()[0] is model  # cached while the pointer stays
    switch_current(run_dir, 7)  # a version that is not there: refuse, do not serve version 1
    with pytest.raises(HTTPException) as refused:
        served.get()
    assert refused.value.status_code == 503 and "no model to serve" in refused.value.detail
    assert str(tmp_path) not in refused.value.detail  # no server paths in what clients see
    switch_current(run_dir, 1)
    assert served.get()[1] == 1


def test_health_says_whether_the_served_version_loads(tiny_copy):
    """/health (LitServe asks every route's `health`): false while a file of the served version is corrupt."""
    api = ScoreAPI(tiny_copy)
    assert api.health()
    damaged = next((version_dir(tiny_copy, read_current(tiny_copy)) / "experts").glob("*.safetensors"))
    original = damaged.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0xFF
    damaged.write_bytes(bytes(flipped))
    assert not api.health()
    damaged.write_bytes(original)
    assert api.health()
    (tiny_copy / "current").unlink()
    assert not api.health()
