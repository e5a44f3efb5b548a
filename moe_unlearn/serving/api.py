"""The model routes: one LitServe `LitAPI` per route, each turning a checked request (see schemas.py)
into a response that names the version that computed it.

    POST /generate           text, expert weights, version          decoded by the engine, with every
    POST /generate/stream    the same, one JSON line per piece       other generation request under way
    POST /score              bits per byte, expert weights, version  batched: one padded pass
    POST /v1/completions and /v1/chat/completions: OpenAI's APIs, in openai_api.py (also via the engine)

Generation routes (`EngineRoute`) hold no model: each request is an async call to the server's decoding
engine (engine.py), which batches requests continuously across routes and never lets batching change a
request's bytes. The engine reads the `current` pointer before it admits requests (hot swap there).

/score's worker holds the version named by `current` in memory (`ServedModel`) and reads the pointer at
the start of every batch, in `predict`; when a forget or drop has switched it, the worker loads the new
version before it computes anything, so no batch that starts after a switch uses the old version. With
`max_batch_size` > 1, LitServe hands `predict` a list of requests and expects a list back; with 1, one
request and one result (`batched` covers both). Scoring runs the whole batch in one padded pass
(`MixtureOfExperts.score_batch`), equal to scoring one at a time up to float rounding; on a CPU this
saves the per-request overhead, not arithmetic.
"""

import codecs
from collections.abc import Callable
from pathlib import Path

import litserve as ls
import torch
from fastapi import HTTPException

from moe_unlearn.errors import UserError
from moe_unlearn.models.loading import CurrentModel
from moe_unlearn.models.moe import MixtureOfExperts
from moe_unlearn.rundir import CONFIG_FILE, read_current, read_manifest, version_dir
from moe_unlearn.serving.engine import Drawn, EngineError, collect, decode, engine_alive
from moe_unlearn.serving.schemas import GenerateRequest, ScoreRequest
from moe_unlearn.storage.versions import checked_bytes, sha256_bytes


class ServedModel:
    """The version `current` names, loaded once (every file checked against its manifest) and reloaded
    when the pointer moves. `get` reads the pointer on every call: call it once per batch."""

    def __init__(self, run_dir: Path):
        self.current = CurrentModel(run_dir)

    def get(self) -> tuple[MixtureOfExperts, int]:
        try:
            model, manifest = self.current.get()
        except UserError as e:  # never fall back to an older version: the pointer is the truth
            # clients learn what is wrong, not where the server keeps its files
            detail = (
                str(e).replace(f"{self.current.run_dir}/", "").replace(str(self.current.run_dir), "the run directory")
            )
            raise HTTPException(503, f"no model to serve: {detail}") from None
        return model, manifest["version"]


class VersionHealth:
    """Whether the version `current` names would load: its config's and every model file's sha256 against
    its manifest. Re-checked only when the pointer or a file's size or modification time changes, since a
    load balancer polls /health often."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self._seen: tuple[tuple | None, bool] = (None, False)

    def ok(self) -> bool:
        try:
            n = read_current(self.run_dir)
            if n is None:
                return False
            vdir = version_dir(self.run_dir, n)
            manifest = read_manifest(vdir)
            paths = [vdir / CONFIG_FILE, *(vdir / p for p in manifest["files"])]
            key = (n, tuple((s.st_size, s.st_mtime_ns) for s in map(Path.stat, paths)))
        except (OSError, UserError, KeyError, TypeError):
            return False
        if key != self._seen[0]:
            self._seen = (key, self._verify(vdir, manifest))
        return self._seen[1]

    @staticmethod
    def _verify(vdir: Path, manifest: dict) -> bool:
        try:
            if sha256_bytes((vdir / CONFIG_FILE).read_bytes()) != manifest["config_file_sha256"]:
                return False
            for path, entry in manifest["files"].items():
                checked_bytes(vdir / path, entry["sha256"])
        except (OSError, UserError, KeyError):
            return False
        return True


def batched(api: ls.LitAPI, x, fn: Callable[[list], list]):
    """fn over the batch: `x` is a list of requests with batching on, one request with it off."""
    return fn(x) if api.max_batch_size > 1 else fn([x])[0]


def rounded(weights: dict[str, float]) -> dict:
    """Expert weights as responses give them: every expert's weight, and the ones used, heaviest first."""
    used = [name for name, w in sorted(weights.items(), key=lambda kv: -kv[1]) if w > 0]
    return {"expert_weights": {k: round(v, 4) for k, v in weights.items()}, "experts": used}


class ModelAPI(ls.LitAPI):
    """What every model route shares: the run directory, the thread count, the served model."""

    def __init__(self, run_dir: Path, *, threads: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.run_dir, self.threads = Path(run_dir), threads
        self.version_health = VersionHealth(self.run_dir)

    def setup(self, device):
        torch.set_num_threads(self.threads)
        self.served = ServedModel(self.run_dir)
        self.served.get()  # load now: a worker is ready only with a model in memory

    def health(self) -> bool:
        """LitServe's /health asks every route, in the HTTP process: 503 unless the served version loads
        (a corrupt file would answer every model request 503 while LitServe's own check said "ok")."""
        return self.version_health.ok()


class EngineRoute(ls.LitAPI):
    """A generation route: it holds no model; each request is decoded by the server's engine (engine.py),
    together with every other request under way. Async, so one worker carries many requests at once."""

    def __init__(self, run_dir: Path, engine_address: str, **kwargs):
        super().__init__(enable_async=True, max_batch_size=1, **kwargs)
        self.run_dir, self.engine_address = Path(run_dir), engine_address
        self.version_health = VersionHealth(self.run_dir)

    def setup(self, device):
        pass

    def health(self) -> bool:
        """The served version checks, and the engine answers (a dead engine fails every generation)."""
        return self.version_health.ok() and engine_alive(self.engine_address)

    async def sample(self, prompt: bytes, max_new_bytes: int, temperature: float, top_k: int, seed: int):
        """The engine's answer (engine.decode: the header, then pieces of rows [byte, *weights]); an
        engine error becomes the HTTP error it names."""
        stream = decode(self.engine_address, prompt, max_new_bytes, temperature, top_k, seed)
        try:
            async for item in stream:
                yield item
        except EngineError as e:
            raise HTTPException(e.status, e.message) from None
        finally:
            await stream.aclose()


class GenerateAPI(EngineRoute):
    async def decode_request(self, request: GenerateRequest):
        return request

    async def predict(self, r: GenerateRequest) -> dict:
        header, drawn = await collect(
            self.sample(r.prompt.encode("utf-8"), r.max_new_bytes, r.temperature, r.top_k, r.seed)
        )
        text = drawn.data.decode("utf-8", errors="replace")
        return {"text": text, **rounded(drawn.weights()), "mixing": header["mixing"], "version": header["version"]}

    async def encode_response(self, output):
        return output


class GenerateStreamAPI(EngineRoute):
    """Bytes as they are sampled, as JSON lines {"text", "version"} (a multi-byte character goes out
    once complete); the last line adds "done", "bytes" and the expert weights. Same seed, same text as
    /generate."""

    def __init__(self, run_dir: Path, engine_address: str, **kwargs):
        super().__init__(run_dir, engine_address, stream=True, **kwargs)

    async def decode_request(self, request: GenerateRequest):
        return request

    async def predict(self, r: GenerateRequest):
        text_of = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
        header, drawn = None, None
        async for item in self.sample(r.prompt.encode("utf-8"), r.max_new_bytes, r.temperature, r.top_k, r.seed):
            if isinstance(item, dict):
                header, drawn = item, Drawn(item["names"])
                continue
            text = text_of(bytes(drawn.add(row) for row in item))
            if text:
                yield {"text": text, "version": header["version"]}
        yield {
            "text": text_of(b"", final=True),
            "done": True,
            "bytes": len(drawn.data),
            **rounded(drawn.weights()),
            "mixing": header["mixing"],
            "version": header["version"],
        }

    async def encode_response(self, outputs):
        async for output in outputs:
            yield output


class ScoreAPI(ModelAPI):
    def decode_request(self, request: ScoreRequest):
        return request.text.encode("utf-8")

    def predict(self, x):
        return batched(self, x, self._score)

    def _score(self, texts: list[bytes]) -> list[dict]:
        model, version = self.served.get()
        return [
            {
                "bits_per_byte": r["bits_per_byte"],
                "bytes": r["bytes"],
                **rounded(r["expert_weights"]),
                "mixing": r["mixing"],
                "version": version,
            }
            for r in model.score_batch(texts)
        ]

    def encode_response(self, output):
        return output
