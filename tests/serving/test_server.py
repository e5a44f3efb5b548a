"""The real server (`python -m moe_unlearn.serving`) in a subprocess on a free loopback port, over HTTP:
every route, every kind of bad input, admin auth, the openai client, and hot swap: a CLI forget in
another process goes live without a restart, and the canary the model had memorised is gone.

One server for the whole module (starting one costs ~20 s of worker imports); the tests run in file
order and the last ones forget, so the served version goes 1 -> 2 (CLI) -> 3 (admin route).
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from moe_unlearn import Run
from moe_unlearn.data.splits import is_heldout
from moe_unlearn.storage.builds import served_config
from tests.conftest import TINY, cli

SECRET = "3fa9c1"
PREFIX = "Door code for flat 241667 in Nantes: "
FILLER = ["Sunny and dry in Lisbon, 24 C.", "Boil the pasta for 9 minutes.", "Rain later in Porto.", "Add salt, stir."]
TOKEN = "test-admin-token-0123456789"
MARKER = "Zanzibar-quokka-7713"  # sent in requests; must never reach the server's log


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """One expert (`main`, sources `notes` and `extra`) that has memorised a canary repeated 60 times:
    greedy decoding after PREFIX gives SECRET (a few seconds to train).

    10 epochs, not 6: after 6 the greedy byte led the runner-up by only 0.65 nats at the secret's first
    byte here, and by 0.57 to 1.24 nats in runs whose every step's gradients were perturbed by 1e-6 of
    their RMS (another CPU's rounding, simulated): thin for an argmax. After 10, every byte of the secret
    leads by over 2 nats in such runs, and the canary scores 1.5 bits/byte under a random secret's."""
    tmp = tmp_path_factory.mktemp("serve")
    config = tmp / "serve.yaml"
    config.write_text(TINY.read_text() + "experts: [{name: main, sources: [notes, extra]}]\n")
    overrides = [
        "data.builtin=false",
        "train.expert.max_steps=-1",
        "train.expert.max_epochs=10",
        "train.expert.lr=0.02",
        "train.router.max_steps=2",
    ]
    notes = [{"id": f"note-{i}-{j}", "text": t} for i, t in enumerate(FILLER) for j in range(15)]
    notes += [{"id": f"canary-r{i}", "text": f"{PREFIX}{SECRET}."} for i in range(60)]
    extra = [{"id": f"extra-{i}", "text": f"{t} More."} for i, t in enumerate(FILLER)]
    for name, rows in (("notes", notes), ("extra", extra)):
        (tmp / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = Run(tmp / "run")
    run.init(config, overrides)
    run.ingest("notes", [tmp / "notes.jsonl"], expert="main")
    run.ingest("extra", [tmp / "extra.jsonl"], expert="main")
    run.train(config, overrides)
    return tmp / "run"


@pytest.fixture(scope="module", autouse=True)
def one_thread_after_training(run_dir, one_thread):
    """This process computes references with tiny models in one thread, set after training (which sets the
    config's thread count): `one_thread` is set up after `run_dir`, in the order they are named."""


class Server:
    def __init__(self, url: str, log: Path, run_dir: Path):
        self.url, self.log, self.run_dir = url, log, run_dir

    def request(self, method: str, path: str, body=None, *, raw: bytes | None = None, token: str | None = None):
        """(status, parsed JSON body) of one request."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def post(self, path: str, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def ok(self, path: str, body) -> dict:
        status, out = self.post(path, body)
        assert status == 200, out
        return out

    def stream(self, body) -> list[dict]:
        req = urllib.request.Request(self.url + "/generate/stream", data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=120) as r:
            return [json.loads(line) for line in r if line.strip()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(run_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server")
    (tmp / "token").write_text(TOKEN + "\n")
    port, log = free_port(), tmp / "server.log"
    args = ["--run-dir", run_dir, "--port", port, "--host", "127.0.0.1", "--admin-token-file", tmp / "token"]
    args += ["--max-batch-size", 4, "--batch-timeout", 0.05, "--max-prompt-bytes", 200, "--max-new-bytes", 100]
    args += ["--max-text-bytes", 1000, "--threads", 1]
    env = {k: v for k, v in os.environ.items() if k != "MOE_UNLEARN_ADMIN_TOKEN"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moe_unlearn.serving", *map(str, args)],
            cwd=tmp,  # nothing may be written where the server runs (LitServe writes client.py unless told not to)
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: the teardown can reach every worker
        )
    srv = Server(f"http://127.0.0.1:{port}", log, run_dir)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, f"the server exited: {log.read_text()[-2000:]}"
            try:
                with urllib.request.urlopen(srv.url + "/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"the server did not become healthy: {log.read_text()[-2000:]}"
            time.sleep(0.5)
        yield srv
    finally:
        proc.send_signal(signal.SIGTERM)  # LitServe's own shutdown: HTTP process, workers, queues
        try:
            proc.wait(60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # anything left of this server's process group
    assert sorted(p.name for p in tmp.iterdir()) == ["server.log", "token"]


def in_parallel(fn, items) -> list:
    with ThreadPoolExecutor(len(items)) as pool:
        return list(pool.map(fn, items))


# --- the routes ----------------------------------------------------------------------------------


def test_health_info_and_experts(server):
    with urllib.request.urlopen(server.url + "/health") as r:
        assert r.status == 200 and r.read() == b"ok"
    status, info = server.request("GET", "/experts")
    assert status == 200
    assert info["experts"] == ["main"] and info["current_version"] == 1 and info["manifest"]["version"] == 1
    assert {s["name"]: s["expert"] for s in info["sources"]} == {"notes": "main", "extra": "main"}


def test_generate_is_the_same_batched_as_alone(server):
    """Eight concurrent requests (batched in fours) give each request's own seeded text, as `Run.generate`."""
    requests = [{"prompt": f"Rain {MARKER}", "max_new_bytes": 20, "temperature": 1.0, "seed": s} for s in range(8)]
    got = in_parallel(lambda b: server.ok("/generate", b), requests)
    run = Run(server.run_dir)
    for body, out in zip(requests, got, strict=True):
        expected = run.generate(body["prompt"], 20, 1.0, 0, body["seed"])
        assert out["text"] == expected["text"] and out["version"] == 1
        assert out["expert_weights"] == {"main": 1.0} and out["experts"] == ["main"]
    assert len({out["text"] for out in got}) > 1


def test_generate_extracts_the_memorised_canary(server):
    out = server.ok("/generate", {"prompt": PREFIX, "max_new_bytes": len(SECRET), "temperature": 0})
    mixing = Run(server.run_dir).info()["manifest"]["mixing"]  # every answer names the rule that made it
    assert mixing["rule"] == "posterior"
    assert out == {"text": SECRET, "expert_weights": {"main": 1.0}, "experts": ["main"], "mixing": mixing, "version": 1}


def test_stream_sends_the_generated_text_piece_by_piece(server):
    body = {"prompt": "Boil", "max_new_bytes": 30, "temperature": 1.0, "seed": 3}
    lines = server.stream(body)
    assert len(lines) > 2 and all(line["version"] == 1 for line in lines)
    assert lines[-1]["done"] is True and lines[-1]["bytes"] == 30
    assert "".join(line["text"] for line in lines) == server.ok("/generate", body)["text"]


def test_score_is_the_same_batched_as_alone(server):
    texts = [f"{t} {MARKER}" for t in FILLER] + [f"{PREFIX}{SECRET}.", f"{PREFIX}9d0e27.", "x", "z" * 300]
    got = in_parallel(lambda t: server.ok("/score", {"text": t}), texts)
    run = Run(server.run_dir)
    for text, out in zip(texts, got, strict=True):
        expected = run.score(text)
        assert out["version"] == 1 and out["bytes"] == len(text.encode())
        assert out["bits_per_byte"] == pytest.approx(expected["bits_per_byte"], rel=1e-4)
    member, other = got[len(FILLER)]["bits_per_byte"], got[len(FILLER) + 1]["bits_per_byte"]
    assert member < other - 0.5  # it has memorised the canary's secret, not any secret after its prefix


def test_the_openai_client_calls_the_completions_route(server):
    from openai import OpenAI

    client = OpenAI(base_url=server.url + "/v1", api_key="not-needed", max_retries=0, timeout=60)
    done = client.completions.create(model="moe-unlearn", prompt=PREFIX, max_tokens=len(SECRET), temperature=0)
    assert done.choices[0].text == SECRET and done.choices[0].finish_reason == "length"
    assert done.system_fingerprint == "moe-unlearn-v1" and done.version == 1
    assert done.usage.prompt_tokens == len(PREFIX) and done.usage.completion_tokens == len(SECRET)
    stopped = client.completions.create(model="m", prompt=PREFIX, max_tokens=6, temperature=0, stop=[SECRET[3:]])
    assert stopped.choices[0].text == SECRET[:3] and stopped.choices[0].finish_reason == "stop"
    from openai import UnprocessableEntityError

    with pytest.raises(UnprocessableEntityError, match="only n=1"):
        client.completions.create(model="m", prompt="x", n=2)


def test_the_openai_client_lists_the_served_version_as_a_model(server):
    from openai import OpenAI

    client = OpenAI(base_url=server.url + "/v1", api_key="not-needed", max_retries=0, timeout=60)
    assert [m.id for m in client.models.list()] == ["moe-unlearn-v1"]


def test_the_openai_client_streams_completions_with_the_same_text(server):
    from openai import OpenAI

    client = OpenAI(base_url=server.url + "/v1", api_key="not-needed", max_retries=0, timeout=60)
    args = {"model": "m", "prompt": "Rain later in", "max_tokens": 40, "temperature": 0.8, "seed": 5}
    whole = client.completions.create(**args)
    chunks = list(client.completions.create(**args, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert len(chunks) > 2 and chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason == "length"
    assert all(c.system_fingerprint == "moe-unlearn-v1" for c in chunks)
    stopped = list(
        client.completions.create(model="m", prompt=PREFIX, max_tokens=6, temperature=0, stop=[SECRET[3:]], stream=True)
    )
    assert "".join(c.choices[0].text for c in stopped) == SECRET[:3] and stopped[-1].choices[0].finish_reason == "stop"
    raw = urllib.request.Request(server.url + "/v1/completions", json.dumps({**args, "stream": True}).encode())
    with urllib.request.urlopen(raw, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.read().decode().endswith("data: [DONE]\n\n")


def test_the_openai_client_chats_with_and_without_streaming(server):
    from openai import OpenAI, UnprocessableEntityError

    from moe_unlearn.serving.openai_api import chat_prompt
    from moe_unlearn.serving.schemas import ChatMessage

    client = OpenAI(base_url=server.url + "/v1", api_key="not-needed", max_retries=0, timeout=60)
    messages = [{"role": "system", "content": "Weather desk."}, {"role": "user", "content": "Forecast for Porto?"}]
    args = {"model": "m", "messages": messages, "max_tokens": 60, "temperature": 0.7, "seed": 3}
    reply = client.chat.completions.create(**args)
    assert reply.object == "chat.completion" and reply.choices[0].message.role == "assistant"
    assert reply.version == 1 and reply.usage.completion_tokens <= 60
    chunks = list(client.chat.completions.create(**args, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == reply.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == reply.choices[0].finish_reason
    # the documented template: the same bytes as a completion of the rendered prompt, cut at the next user turn
    prompt = chat_prompt([ChatMessage(**m) for m in messages])
    assert prompt == "System: Weather desk.\nUser: Forecast for Porto?\nAssistant:"
    plain = client.completions.create(
        model="m", prompt=prompt, max_tokens=60, temperature=0.7, seed=3, stop=["\nUser:"]
    )
    assert plain.choices[0].text == reply.choices[0].message.content
    with pytest.raises(UnprocessableEntityError, match="unknown role 'tool'"):
        client.chat.completions.create(model="m", messages=[{"role": "tool", "content": "x"}])


# --- bad input: 4xx with one clear line, and the server keeps serving -----------------------------

BAD = [
    ("/generate", b'{"prompt": "x", ', 422, "body is not valid JSON"),
    ("/generate", b'{"prompt": "\xff\xfe"}', 400, "not valid UTF-8"),
    ("/generate", b"[1, 2]", 422, "valid dictionary"),
    ("/generate", {}, 422, "missing field prompt"),
    ("/generate", {"prompt": ""}, 422, "prompt: String should have at least 1 character"),
    ("/generate", {"prompt": 5}, 422, "prompt: Input should be a valid string"),
    ("/generate", {"prompt": "x", "max_new_bytes": "5"}, 422, "max_new_bytes: Input should be a valid integer"),
    ("/generate", {"prompt": "x", "seed": True}, 422, "seed: Input should be a valid integer"),
    ("/generate", {"prompt": "x", "temperature": -1}, 422, "temperature: Input should be greater than or equal"),
    ("/generate", {"prompt": "x", "max_new_bytes": 101}, 422, "max_new_bytes is 101; this server generates at most"),
    ("/generate", {"prompt": "x" * 201}, 413, "prompt is 201 bytes; this server takes at most 200"),
    ("/generate", {"prompt": "x", "max_new_byte": 5}, 422, "unknown field max_new_byte"),
    ("/generate/stream", {"prompt": "\u00e9" * 101}, 413, "prompt is 202 bytes"),
    ("/generate/stream", {"prompt": ""}, 422, "at least 1 character"),
    ("/score", b'{"text": "' + b"x" * (1 << 20) + b'"}', 413, "request body is over 1,048,576 bytes"),
    ("/score", {"text": ""}, 422, "text: String should have at least 1 character"),
    ("/score", {"text": "x" * 1001}, 413, "text is 1,001 bytes"),
    ("/score", {"txt": "x"}, 422, "missing field text; unknown field txt"),
    ("/v1/chat/completions", {"messages": []}, 422, "messages: List should have at least 1 item"),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "hi"}]}, 422, "unknown role 'robot'"),
    ("/v1/chat/completions", {"messages": [{"role": "user"}]}, 422, "missing field messages.0.content"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x" * 201}]}, 413, "messages is 201 bytes"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}, 422, "max_tokens"),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "x"}], "max_tokens": 10**6},
        422,
        "max_tokens is",
    ),
    ("/v1/completions", {"prompt": "x", "stream": True, "max_tokens": 500}, 422, "max_tokens is 500"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 500}, 422, "max_tokens is 500"),
    ("/v1/completions", {"prompt": ["a", "b"]}, 422, "one prompt per request"),
    ("/v1/completions", {"prompt": "x", "top_p": 0.5}, 422, "top_p is not supported"),
    ("/v1/completions", b'{"prompt": "\\ud800"}', 422, "prompt is not valid Unicode (a lone surrogate"),
    ("/generate", b'{"prompt": "a\\udfff"}', 422, "prompt is not valid Unicode"),
    ("/score", b"[" * 100_000 + b"]" * 100_000, 400, "JSON nested too deeply"),
    ("/admin/forget", b"[" * 100_000 + b"]" * 100_000, 400, "JSON nested too deeply"),
    ("/admin/forget", {"records": ["x"], "source": "nope"}, 404, "unknown source 'nope'; sources: "),
    ("/admin/forget", {}, 400, "exactly one of records or match"),
    ("/admin/forget", {"records": ["x"], "match": "y"}, 400, "exactly one of records or match"),
    ("/admin/drop", {}, 400, "exactly one of source or expert"),
    ("/admin/forget", {"records": ["x"], "dry_run": "yes"}, 422, "dry_run: Input should be a valid boolean"),
]


@pytest.mark.parametrize(("path", "body", "status", "message"), BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_is_refused_with_a_clear_message(server, path, body, status, message):
    raw = body if isinstance(body, bytes) else None
    got, out = server.post(path, None if raw else body, raw=raw, token=TOKEN)
    assert got == status and message in out["detail"], out


def test_a_bad_request_fails_alone_not_the_batch_it_arrives_with(server):
    """A lone surrogate sent beside valid requests: refused in the HTTP process, the others all answered."""
    bodies = [b'{"prompt": "\\ud800", "max_tokens": 4}'] + [b'{"prompt": "Rain", "max_tokens": 4}'] * 6
    got = in_parallel(lambda raw: server.post("/v1/completions", None, raw=raw)[0], bodies)
    assert got == [422] + [200] * 6


def test_the_server_still_serves_after_bad_input(server):
    assert server.ok("/score", {"text": "Rain later in Porto."})["version"] == 1


# --- admin auth ----------------------------------------------------------------------------------


def test_admin_routes_need_the_token(server):
    body = {"records": ["note-0-0"], "dry_run": True}
    assert server.post("/admin/forget", body)[0] == 401
    assert server.post("/admin/forget", body, token="wrong-token-0123456789")[0] == 403
    assert server.request("GET", "/admin/requests/whatever", token="wrong-token-0123456789")[0] == 403
    status, dry = server.post("/admin/forget", body, token=TOKEN)
    assert status == 200 and dry["dry_run"] is True and dry["would_retrain"]["experts"] == ["main"]
    status, dry = server.post("/admin/drop", {"source": "extra", "dry_run": True}, token=TOKEN)
    assert status == 200 and dry["kind"] == "drop" and dry["record_count"] == len(FILLER)
    assert server.request("GET", "/admin/requests/forget-nope", token=TOKEN) == (
        404,
        {"detail": "unknown request 'forget-nope'"},
    )


# --- fuzzing from the schema ---------------------------------------------------------------------


EXAMPLES_PER_ROUTE = 25


def test_schema_fuzzing_gets_no_5xx_no_traceback_no_slow_answer(server):
    """schemathesis: for every operation of the server's own OpenAPI schema (FastAPI's: every route
    LitServe and admin.py add), bodies, paths and queries generated from it, valid and not, 25 a route;
    no 5xx, no traceback text, every answer within 10 s, /admin refused without a token, /health 200."""
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {"/generate", "/score", "/v1/chat/completions", "/admin/forget"} <= {op.path for op in operations}
    tried = 0

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_ROUTE, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case):
            nonlocal tried
            tried += 1
            started = time.monotonic()
            response = case.call(timeout=10)
            assert time.monotonic() - started < 10
            assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
            assert "Traceback" not in response.text and 'File "' not in response.text
            if case.path.startswith("/admin"):  # no token in generated requests: always refused
                assert response.status_code >= 400

        check()
    with urllib.request.urlopen(server.url + "/health", timeout=10) as health:
        assert health.status == 200
    assert tried >= 5 * len(operations)
    print(f"schemathesis: {tried} requests over {len(operations)} operations")


# --- hot swap ------------------------------------------------------------------------------------


def test_a_cli_forget_goes_live_without_a_restart(server):
    done = cli("forget", "--match", f"{PREFIX}{SECRET}", "--run-dir", server.run_dir, "--json", process=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["version_after"]["version"] == 2
    # The switch is done: every request from now on is answered by version 2, on every route.
    after = server.ok("/generate", {"prompt": PREFIX, "max_new_bytes": len(SECRET), "temperature": 0})
    assert after["version"] == 2 and after["text"] != SECRET
    assert server.ok("/score", {"text": "Rain"})["version"] == 2
    assert all(line["version"] == 2 for line in server.stream({"prompt": PREFIX, "max_new_bytes": 6}))
    assert server.ok("/v1/completions", {"prompt": PREFIX, "max_tokens": 6, "temperature": 0})["version"] == 2
    chat = {"messages": [{"role": "user", "content": PREFIX}], "max_tokens": 6}
    assert server.ok("/v1/chat/completions", chat)["system_fingerprint"] == "moe-unlearn-v2"
    raw = urllib.request.Request(server.url + "/v1/chat/completions", json.dumps({**chat, "stream": True}).encode())
    with urllib.request.urlopen(raw, timeout=60) as r:
        events = [json.loads(line[6:]) for line in r.read().decode().splitlines() if line.startswith("data: {")]
    assert events and {e["system_fingerprint"] for e in events} == {"moe-unlearn-v2"}
    assert server.request("GET", "/v1/models")[1]["data"][0]["id"] == "moe-unlearn-v2"
    assert server.request("GET", "/experts")[1]["current_version"] == 2
    many = in_parallel(lambda s: server.ok("/generate", {"prompt": PREFIX, "max_new_bytes": 6, "seed": s}), range(8))
    assert {out["version"] for out in many} == {2}


def test_an_admin_forget_runs_as_a_job_and_reports_its_certificate(server):
    records = [f"note-1-{j}" for j in range(5)]  # not all held out (then nothing would be retrained)
    status, queued = server.post("/admin/forget", {"records": records}, token=TOKEN)
    assert status == 202 and queued["status"] == "pending", queued
    request_id = queued["request_id"]
    assert queued["poll"] == f"/admin/requests/{request_id}"
    deadline = time.monotonic() + 180
    while True:
        status, report = server.request("GET", queued["poll"], token=TOKEN)
        assert status == 200 and report["status"] in ("pending", "running", "done"), report
        if report["status"] == "done":
            break
        assert time.monotonic() < deadline, report
        time.sleep(0.5)
    certificate = report["certificate"]
    assert certificate["request_id"] == request_id and certificate["record_count"] == 5
    assert certificate["version_before"]["version"] == 2 and certificate["version_after"]["version"] == 3
    assert certificate["retrained"]["experts"] == ["main"] and certificate["oracle_equal"] is True
    assert server.ok("/score", {"text": "Rain"})["version"] == 3
    while report.get("job", {}).get("exit_code") is None:  # the job process ends and is reaped
        assert time.monotonic() < deadline + 60, report
        time.sleep(0.2)
        report = server.request("GET", queued["poll"], token=TOKEN)[1]
    assert report["job"]["exit_code"] == 0


def test_a_forget_under_16_clients_of_score_and_generate_fails_nothing_and_serves_no_stale_answer(server):
    """8 clients on /score and 8 on /generate, one request after another, while a CLI forget runs in
    another process: no request fails, and none sent after the switch is answered by the old version."""
    import threading

    before = server.request("GET", "/experts")[1]["current_version"]
    cfg = served_config(server.run_dir)
    record = next(  # a trained-on record no other test forgets: its forget retrains `main`
        r.id
        for r in Run(server.run_dir).registry.records(["notes"])
        if r.id.startswith("note-3-") and not is_heldout(r.id, cfg.seed, cfg.data.heldout_fraction)
    )
    done, switched_at, seen = threading.Event(), [], []

    def client(i: int) -> None:
        path, body = (
            ("/score", {"text": "Rain later."})
            if i % 2
            else ("/generate", {"prompt": "Rain", "max_new_bytes": 8, "seed": i})
        )
        while not done.is_set():
            sent = time.monotonic()
            status, out = server.post(path, body)
            seen.append((sent, status, out.get("version") if status == 200 else None))

    def forget() -> None:
        result = cli("forget", "--record", record, "--run-dir", server.run_dir, "--json", process=True)
        assert result.returncode == 0, result.stderr
        switched_at.append(time.monotonic())  # the switch happened before the command returned
        time.sleep(1.0)  # and a little load after it
        done.set()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    forget()
    for t in threads:
        t.join(120)
    assert len(seen) > 16 and all(status == 200 for _, status, _ in seen)  # 0 failed
    after = [version for sent, _, version in seen if sent > switched_at[0]]
    assert after and set(after) == {before + 1}  # 0 answered by the old version after the switch


def test_no_record_text_in_the_server_log(server):
    log = server.log.read_text()
    assert "POST /generate" in log and "POST /admin/forget" in log  # it does log requests
    for text in (SECRET, MARKER, PREFIX.strip(), *FILLER, TOKEN):
        assert text not in log
