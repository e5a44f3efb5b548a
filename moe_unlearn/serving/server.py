"""`build_server`: the LitServe server of a run directory (`moe-unlearn serve` runs it; see command.py).

    server = build_server("checkpoints/default", ServeSettings(max_batch_size=8))
    serve_forever(server, host="127.0.0.1", port=8000)

Seven model routes (api.py; openai_api.py: the OpenAI routes and their streaming twins), each its own
LitServe worker process(es): /score's holds the served version and batches requests; the six generation
routes hold no model and hand every request to one decoding engine process (engine.py), which decodes
them all together, one byte per step (continuous batching across routes). LitServe's /health (200 once
every worker is up and the served version checks against its manifest) and /info; GET /experts and the
/admin routes (admin.py) on the same FastAPI app. Requests are checked in the HTTP process (schemas.py,
limits.py) before they are queued for a worker.
"""

import os
import signal
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path

import litserve as ls

from moe_unlearn.errors import UserError
from moe_unlearn.models.loading import load_version
from moe_unlearn.rundir import exists, read_current
from moe_unlearn.serving.admin import add_routes
from moe_unlearn.serving.api import GenerateAPI, GenerateStreamAPI, ScoreAPI
from moe_unlearn.serving.engine import EngineProcess
from moe_unlearn.serving.limits import STREAM_SUFFIX, Checked, Limits, RequestLimits, add_error_handlers
from moe_unlearn.serving.loop import WaitingBatchedLoop
from moe_unlearn.serving.openai_api import ChatAPI, ChatStreamAPI, CompletionsAPI, CompletionsStreamAPI

HOSTS = ("127.0.0.1", "0.0.0.0", "::")  # what LitServe listens on
OPENAI = ("/v1/completions", "/v1/chat/completions")


@dataclass(frozen=True)
class ServeSettings:
    max_batch_size: int = 8  # requests per batch on /score (1: batching off)
    batch_timeout: float = 0.005  # seconds /score's worker waits for a batch to fill
    decode_slots: int = 16  # generation requests the engine decodes at once (more wait for a free slot)
    workers: int = 1  # worker processes per model route
    threads: int = 0  # torch threads of the engine and each /score worker; 0: 1 for the engine, the rest shared
    timeout: float = 60.0  # seconds a request may wait in a queue before it is answered 504
    limits: Limits = field(default_factory=Limits)
    admin_token: str | None = None  # None: the admin routes answer 403

    def check(self) -> None:
        problems = [
            (self.max_batch_size < 1, "max_batch_size must be >= 1"),
            (self.decode_slots < 1, "decode_slots must be >= 1"),
            (not 0 <= self.batch_timeout < self.timeout, "batch_timeout must be >= 0 and below timeout"),
            (self.workers < 1, "workers must be >= 1"),
            (self.threads < 0, "threads must be >= 0"),
            (min(vars(self.limits).values()) < 1, "limits must be >= 1"),
        ]
        for bad, message in problems:
            if bad:
                raise UserError(message)


@dataclass
class Server:
    """The LitServer and the decoding engine its generation routes talk to (started by `serve_forever`)."""

    lit: ls.LitServer
    engine: EngineProcess


def build_server(run_dir: str | Path, settings: ServeSettings | None = None) -> Server:
    """The server of the version `current` names in `run_dir` (and every later one: the workers and the
    engine follow the pointer). Raises UserError if there is nothing to serve."""
    settings = settings or ServeSettings()
    settings.check()
    run_dir = Path(run_dir).resolve()
    if not exists(run_dir):
        raise UserError(f"no run directory at {run_dir}")
    current = read_current(run_dir)
    if current is None:
        raise UserError(f"no trained model in {run_dir}: run `moe-unlearn train` first")
    load_version(run_dir, current)  # a corrupt or incomplete version: one line here, not a traceback per worker
    # The engine and /score's workers compute; the generation routes' workers only pass bytes on. A
    # decoding step is many small ops: one thread each by default (a second one waits on the first, and
    # on a busy machine its spinning costs 100x: bench/serve_load.py), /score's share of the cores.
    threads = settings.threads or max(1, (os.cpu_count() or 1) // (settings.workers + 1))
    engine = EngineProcess(run_dir, settings.decode_slots, settings.threads or 1)
    loop = WaitingBatchedLoop() if settings.max_batch_size > 1 else "auto"
    batching = {"max_batch_size": settings.max_batch_size, "batch_timeout": settings.batch_timeout, "loop": loop}
    to_engine = {"engine_address": engine.address}
    apis = [
        GenerateAPI(run_dir, api_path="/generate", **to_engine),
        GenerateStreamAPI(run_dir, api_path="/generate/stream", **to_engine),
        ScoreAPI(run_dir, api_path="/score", threads=threads, **batching),
        CompletionsAPI(run_dir, api_path="/v1/completions", **to_engine),
        CompletionsStreamAPI(run_dir, api_path="/v1/completions" + STREAM_SUFFIX, **to_engine),
        ChatAPI(run_dir, api_path="/v1/chat/completions", **to_engine),
        ChatStreamAPI(run_dir, api_path="/v1/chat/completions" + STREAM_SUFFIX, **to_engine),
    ]
    lim = settings.limits
    prompt = Checked("prompt", lim.max_prompt_bytes, "max_new_bytes", lim.max_new_bytes)
    checked = {
        "/generate": prompt,
        "/generate/stream": prompt,
        "/score": Checked("text", lim.max_text_bytes),
        "/v1/completions": Checked("prompt", lim.max_prompt_bytes, "max_tokens", lim.max_new_bytes, streams=True),
        "/v1/chat/completions": Checked(
            "messages", lim.max_prompt_bytes, "max_tokens", lim.max_new_bytes, streams=True
        ),
    }
    checked |= {path + STREAM_SUFFIX: replace(checked[path], streams=False) for path in OPENAI}
    server = ls.LitServer(
        apis,
        accelerator="cpu",  # the model's tensors are made on the CPU
        workers_per_device=settings.workers,
        timeout=settings.timeout,
        middlewares=[(RequestLimits, {"checked": checked, "max_body_bytes": lim.max_body_bytes})],
        model_metadata={"name": "moe-unlearn", "run_dir": str(run_dir)},
    )
    add_error_handlers(server.app)
    add_routes(server.app, run_dir, settings.admin_token)
    return Server(server, engine)


def serve_forever(
    server: Server, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info", access_log: bool = True
) -> None:
    """Run until interrupted (Ctrl-C or SIGTERM: both shut the HTTP process and the workers down); one
    HTTP process, where admin jobs are tracked, and the model workers. Raises UserError for a host
    LitServe does not take or a port in use."""
    if host not in HOSTS:
        raise UserError(f"host must be one of {', '.join(HOSTS)} (127.0.0.1: this machine only), not {host!r}")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as e:
            raise UserError(f"cannot listen on {host} port {port}: {e.strerror}") from None
    main = os.getpid()

    def on_sigterm(signum, frame):
        if os.getpid() == main:
            raise KeyboardInterrupt  # LitServe's clean shutdown
        signal.signal(signum, signal.SIG_DFL)  # a forked HTTP process (uvicorn re-raises the signal it caught)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    server.engine.start()
    try:
        server.lit.run(
            host=host,
            port=port,
            num_api_servers=1,
            generate_client_file=False,
            log_level=log_level,
            access_log=access_log,
        )
    finally:
        server.engine.stop()
