"""Benchmark: the HTTP server under load (not a test). A bounded load generator, on 127.0.0.1 only.

For each batch size B it starts `python -m moe_unlearn.serving` on a free loopback port (the run directory
is only read) with `--max-batch-size B --decode-slots B` (/score's batches and the decoding engine's
slots), then for each route runs N concurrent clients (keep-alive connections, one request at a time
each) for a fixed time and reports requests/s, new bytes/s on the generation routes (`--bytes` each),
p50/p95/p99 latency and, for /generate/stream, the time to the first byte. `--code DIR` runs the server
from another checkout (e.g. `git worktree add /tmp/before HEAD~1`), so that a change is measured beside
what it replaces in one run (its server is not given --decode-slots). With --swap it serves a copy of
the run directory, keeps /score and /generate under load (half the clients each), forgets one
trained-on record with the CLI in another process, and reports failed requests (target 0), responses
from the old version to requests sent after the switch (target 0) and the time from the switch of
`current` to the first response from the new version. With --soak S it keeps /generate and
/generate/stream under load for S seconds and reports the server's resident memory (every process of it:
HTTP, workers, engine) at the start and the end. Prints a Markdown table; writes JSON.

    .venv/bin/python -m bench.serve_load --run-dir checkpoints/default --clients 16 --seconds 20 \
        --batch-sizes 1 16 --bytes 256 --swap --soak 600 --out bench/out/serve_load.json

Targets: with batching, /score serves at least 3x the requests/s of batch size 1 at 16 clients (issue 7);
/generate and /generate/stream, 16 clients, 256 bytes each: at least 20x the bytes/s of the server
before the engine (issue [3/5]); 0 failed; no memory growth over a 10-minute load.
"""

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"  # never anything else
MAX_CLIENTS, MAX_SECONDS = 256, 600
SCORE_TEXTS = [
    "Forecast for Lisbon by Ana Silva, issued 07:15. Sunny and dry. Chance of rain 10%. Winds light from the "
    "north-west, 10 to 15 km/h. Highs of 24 C, lows of 15 C overnight.",
    "On 3 May 2021, the parties agreed as follows. The Licensee shall pay all fees within 30 days of the invoice "
    "date. Late payments carry interest at 2% per month.",
    "Tuesday 9 May: lemon risotto for 4. For 4 people, ready in 30 minutes. Ingredients: 320 g arborio rice, 1 "
    "lemon, 1 litre stock, 50 g butter, parmesan.",
    "def load(path):\n    with open(path) as f:\n        return json.load(f)\n\nconfig = load('settings.json')\n"
    "print(config['name'])\n",
]
PROMPT = "Forecast for Lisbon by"


# --- a minimal HTTP/1.1 keep-alive client (no dependency; measures the first body byte) -----------------


class Client:
    def __init__(self, port: int):
        self.port, self.reader, self.writer = port, None, None

    async def post(self, path: str, body: dict) -> tuple[int, list[bytes], float]:
        """(status, body pieces as they arrived, seconds to the first body piece)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        data = json.dumps(body).encode()
        head = f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}"
        started = time.perf_counter()
        self.writer.write(head.encode() + b"\r\n\r\n" + data)
        await self.writer.drain()
        status = int((await self.reader.readline()).split()[1])
        headers = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            key, _, value = line.decode().partition(":")
            headers[key.strip().lower()] = value.strip()
        pieces, first = [], None
        if headers.get("transfer-encoding") == "chunked":
            while size := int((await self.reader.readline()).strip(), 16):
                pieces.append(await self.reader.readexactly(size))
                first = first or time.perf_counter() - started
                await self.reader.readline()
            await self.reader.readline()
        else:
            pieces.append(await self.reader.readexactly(int(headers.get("content-length", 0))))
            first = time.perf_counter() - started
        if headers.get("connection") == "close":
            await self.close()
        return status, pieces, first or 0.0

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None


def request_body(route: str, i: int, new_bytes: int = 32) -> dict:
    if route == "score":
        return {"text": SCORE_TEXTS[i % len(SCORE_TEXTS)]}
    return {"prompt": PROMPT, "max_new_bytes": new_bytes, "temperature": 0.8, "seed": i}


PATHS = {"score": "/score", "generate": "/generate", "stream": "/generate/stream"}


async def load(port: int, route: str, clients: int, seconds: float, on_response=None, new_bytes: int = 32) -> dict:
    """`clients` loops, each sending one request after another for `seconds`."""
    stop_at = time.perf_counter() + seconds
    latencies, ttfbs, failures, counter = [], [], [], iter(range(10**9))

    async def one_client():
        client = Client(port)
        try:
            while time.perf_counter() < stop_at:
                i, sent = next(counter), time.perf_counter()
                try:
                    status, pieces, first = await client.post(PATHS[route], request_body(route, i, new_bytes))
                except (OSError, ValueError, asyncio.IncompleteReadError) as e:
                    failures.append(type(e).__name__)
                    await client.close()
                    continue
                done = time.perf_counter()
                if status != 200:
                    failures.append(status)
                    continue
                latencies.append(done - sent)
                ttfbs.append(first)
                if on_response is not None:
                    on_response(sent, done, json.loads(pieces[-1].splitlines()[-1]))
        finally:
            await client.close()

    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    wall = time.perf_counter() - started
    out = {"route": PATHS[route], "clients": clients, "seconds": round(wall, 1), "requests": len(latencies)}
    out |= {"failed": len(failures), "requests_per_s": round(len(latencies) / wall, 1), **percentiles(latencies)}
    if route != "score":
        out |= {"bytes_each": new_bytes, "bytes_per_s": round(len(latencies) * new_bytes / wall, 1)}
    if route == "stream":
        out["ttfb_ms"] = percentiles(ttfbs)
    return out


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    ordered = sorted(values)
    pick = lambda q: round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)  # noqa: E731
    return {"p50_ms": pick(0.50), "p95_ms": pick(0.95), "p99_ms": pick(0.99)}


# --- the server, in its own process group -----------------------------------------------------------


@contextlib.contextmanager
def server(run_dir: Path, batch_size: int, batch_timeout: float, log: Path, extra: list[str], code: Path | None = None):
    """(port, process group id) of a healthy server; `code`: a checkout to run it from."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    args = ["--run-dir", Path(run_dir).resolve(), "--host", HOST, "--port", port, "--max-batch-size", batch_size]
    args += ["--batch-timeout", batch_timeout, "--no-access-log", "--log-level", "warning", *extra]
    if code is None:
        args += ["--decode-slots", batch_size]
    env = os.environ | ({"PYTHONPATH": str(code.resolve())} if code else {})
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moe_unlearn.serving", *map(str, args)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=code or None,
        )
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited with code {proc.returncode}: see {log}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=5) as r:
                if r.status == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"the server did not become healthy in 300 s: see {log}")
            time.sleep(0.5)
        yield port, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


# --- the scenarios ------------------------------------------------------------------------------------


def throughput(run_dir: Path, batch_sizes: list[int], routes: list[str], args, log: Path) -> list[dict]:
    rows = []
    for batch_size in batch_sizes:
        with server(run_dir, batch_size, args.batch_timeout, log, args.server_args, args.code) as (port, _):
            for route in routes:
                asyncio.run(load(port, route, min(args.clients, 4), 2.0, new_bytes=args.bytes))  # warm-up
                measured = asyncio.run(load(port, route, args.clients, args.seconds, new_bytes=args.bytes))
                row = {"max_batch_size": batch_size, **measured}
                print(row, flush=True)
                rows.append(row)
    return rows


def rss_mib(group: int) -> float:
    """Resident memory of every process in process group `group`, MiB."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == group:  # pgrp, after state and ppid
                status = (stat.parent / "status").read_text()
                total += int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
    return round(total / 1024, 1)


def soak(run_dir: Path, args, log: Path) -> dict:
    """/generate and /generate/stream under load (half the clients each) for --soak seconds: the server's
    resident memory at the start (after a warm-up) and at the end, sampled every 30 s in between."""
    batch = max(args.batch_sizes)
    with server(run_dir, batch, args.batch_timeout, log, args.server_args, args.code) as (port, group):

        async def scenario() -> dict:
            await load(port, "generate", min(args.clients, 4), 2.0, new_bytes=args.bytes)
            samples = [rss_mib(group)]

            async def sample():
                while True:
                    await asyncio.sleep(30)
                    samples.append(rss_mib(group))

            sampler = asyncio.create_task(sample())
            half = max(1, args.clients // 2)
            loads = await asyncio.gather(
                load(port, "generate", half, args.soak, new_bytes=args.bytes),
                load(port, "stream", args.clients - half or 1, args.soak, new_bytes=args.bytes),
            )
            sampler.cancel()
            samples.append(rss_mib(group))
            return {
                "seconds": args.soak,
                "clients": args.clients,
                "max_batch_size": batch,
                "requests": sum(x["requests"] for x in loads),
                "failed": sum(x["failed"] for x in loads),
                "bytes_per_s": round(sum(x["bytes_per_s"] for x in loads), 1),
                "rss_mib_start": samples[0],
                "rss_mib_end": samples[-1],
                "rss_mib_max": max(samples),
            }

        out = asyncio.run(scenario())
    print(out, flush=True)
    return out


def swap(run_dir: Path, args, log: Path, work: Path) -> dict:
    """/score under load while the CLI forgets one trained-on record of a copy of the run directory."""
    from moe_unlearn.data.splits import is_heldout
    from moe_unlearn.rundir import read_current
    from moe_unlearn.storage.builds import served_config
    from moe_unlearn.storage.registry import Registry

    copy = work / "run"
    shutil.copytree(run_dir, copy)
    cfg, registry = served_config(copy), Registry(copy / "registry.db")
    source = registry.sources_of(registry.experts()[-1])[0]  # the last expert's: retrains it and the last stage
    record = next(
        i for i, _ in registry.record_ids_of(source) if not is_heldout(i, cfg.seed, cfg.data.heldout_fraction)
    )
    registry.close()
    old = read_current(copy)
    switched, seen = {}, {"stale_after_switch": 0, "first_new": None}

    def on_response(sent: float, done: float, body: dict) -> None:
        if "at" in switched and body["version"] == old and sent > switched["at"]:
            seen["stale_after_switch"] += 1
        if body["version"] != old and seen["first_new"] is None:
            seen["first_new"] = done

    async def scenario(port: int) -> dict:
        async def watch_pointer():
            while read_current(copy) == old:
                await asyncio.sleep(0.005)
            switched["at"] = time.perf_counter()

        async def forget():
            await asyncio.sleep(args.seconds / 3)
            started = time.perf_counter()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "moe_unlearn", "forget", "--record", record, "--run-dir", str(copy), "--json",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            code = await proc.wait()
            return code, time.perf_counter() - started

        watcher = asyncio.create_task(watch_pointer())
        forgetting = asyncio.create_task(forget())
        loads, half = [], max(1, args.clients // 2)

        async def both(seconds: float) -> list[dict]:
            return await asyncio.gather(
                load(port, "score", half, seconds, on_response),
                load(port, "generate", args.clients - half or 1, seconds, on_response, args.bytes),
            )

        while not forgetting.done() or not loads:  # load until the forget is over, then one more round
            loads += await both(args.seconds)
        loads += await both(args.seconds / 3)
        watcher.cancel()
        code, forget_s = forgetting.result()
        return {
            "forget_exit_code": code,
            "forget_seconds": round(forget_s, 1),
            "requests": sum(x["requests"] for x in loads),
            "failed": sum(x["failed"] for x in loads),
            "stale_after_switch": seen["stale_after_switch"],
            "switch_to_first_new_ms": None
            if "at" not in switched or seen["first_new"] is None
            else round(1000 * (seen["first_new"] - switched["at"]), 1),
        }

    with server(copy, max(args.batch_sizes), args.batch_timeout, log, args.server_args, args.code) as (port, _):
        routes = "/score + /generate"
        out = {"route": routes, "clients": args.clients, "record_source": source, **asyncio.run(scenario(port))}
    print(out, flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", type=Path, default=Path("checkpoints/default"), help="A trained run (only read).")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=20.0, help="Per route and batch size.")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    p.add_argument("--batch-timeout", type=float, default=0.005)
    p.add_argument("--routes", nargs="+", choices=list(PATHS), default=list(PATHS))
    p.add_argument("--swap", action="store_true", help="Also forget a record mid-load (on a copy of the run).")
    p.add_argument("--bytes", type=int, default=32, help="max_new_bytes of each generation request.")
    p.add_argument("--soak", type=float, default=0, help="Seconds of generation load with memory sampled (0: none).")
    p.add_argument("--code", type=Path, help="Run the server from this checkout (a baseline), not this one.")
    p.add_argument("--server-args", type=shlex.split, default=[], help="More `serve` options, e.g. '--threads 2'.")
    p.add_argument("--out", type=Path, default=Path("bench/out/serve_load.json"))
    args = p.parse_args()
    if not 1 <= args.clients <= MAX_CLIENTS or not 0 < args.seconds <= MAX_SECONDS:
        p.error(f"--clients must be 1..{MAX_CLIENTS} and --seconds in (0, {MAX_SECONDS}]")
    if not (args.run_dir / "current").is_file():
        p.error(f"{args.run_dir} holds no trained model")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    log = args.out.with_suffix(".log")
    log.write_text("")
    results = {"run_dir": str(args.run_dir), "cpus": os.cpu_count(), "code": str(args.code or "."), "throughput": []}
    results["throughput"] = throughput(args.run_dir, args.batch_sizes, args.routes, args, log)
    if args.swap:
        with tempfile.TemporaryDirectory() as work:
            results["swap"] = swap(args.run_dir, args, log, Path(work))
    if args.soak:
        results["soak"] = soak(args.run_dir, args, log)
    args.out.write_text(json.dumps(results, indent=2))
    print(table(results))


def table(results: dict) -> str:
    head = "| route | batch | clients | req/s | bytes/s | p50 ms | p95 ms | p99 ms | TTFB p50 ms | failed |"
    lines = [head, "|---" * 10 + "|"]
    for r in results["throughput"]:
        ttfb = r.get("ttfb_ms", {}).get("p50_ms", "")
        cells = [r["route"], r["max_batch_size"], r["clients"], r["requests_per_s"], r.get("bytes_per_s", "")]
        cells += [r["p50_ms"], r["p95_ms"], r["p99_ms"], ttfb, r["failed"]]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    score = {r["max_batch_size"]: r["requests_per_s"] for r in results["throughput"] if r["route"] == "/score"}
    if len(score) > 1 and score.get(1):
        lines.append(f"\n/score: batching ({max(score)}) gives {score[max(score)] / score[1]:.1f}x batch size 1")
    if "swap" in results:
        s = results["swap"]
        lines.append(
            f"\nforget mid-load: {s['requests']} requests, {s['failed']} failed, {s['stale_after_switch']} answered by "
            f"the old version after the switch; first response from the new version "
            f"{s['switch_to_first_new_ms']} ms after the switch (forget took {s['forget_seconds']} s)"
        )
    if "soak" in results:
        s = results["soak"]
        lines.append(
            f"\nsoak: {s['seconds']:g} s of /generate + /generate/stream, {s['requests']} requests, "
            f"{s['failed']} failed, {s['bytes_per_s']} bytes/s; resident memory {s['rss_mib_start']} MiB at "
            f"the start, {s['rss_mib_end']} MiB at the end (max {s['rss_mib_max']})"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
