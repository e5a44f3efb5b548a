"""OpenAI's completions and chat APIs over the byte model, as the official `openai` client drives them.

    POST /v1/completions        client.completions.create(...)          decoded by the engine (engine.py)
    POST /v1/chat/completions   client.chat.completions.create(...)     the same
    ... with "stream": true     server-sent events, one chunk per piece of text, then "data: [DONE]"

A streamed request is routed by `limits.RequestLimits` (it reads the body anyway) to the route's
streaming twin (the same path + STREAM_SUFFIX), a LitAPI with streaming on: a LitServe route either
streams or does not. Tokens are bytes (`max_tokens` counts bytes, `usage` counts bytes); a piece of a
stream is the text decoded so far (a multi-byte character goes out once complete). Every answer names
the version that computed it (`system_fingerprint` "moe-unlearn-v<n>", and `version`) and the mixing
rule (`mixing`), as every model route does.

The chat template (documented in the README) renders each message as "<Role>: <content>\\n" (roles
System, Developer, User, Assistant) and ends with "Assistant:", so the model continues the assistant's
turn; the reply stops at the first "\\nUser:" (the model starting the user's next turn) or at one of
the request's own `stop` strings, and its leading space is kept as generated.
"""

import codecs
import json
import time
import uuid

from moe_unlearn.errors import utf8
from moe_unlearn.serving.api import EngineRoute, rounded
from moe_unlearn.serving.engine import Drawn
from moe_unlearn.serving.schemas import ChatMessage, ChatRequest, CompletionRequest, Sampling

TURN_END = "\nUser:"  # a chat reply ends where the model starts the user's next turn


def chat_prompt(messages: list[ChatMessage]) -> str:
    """The byte prompt of a conversation: "<Role>: <content>" lines, then "Assistant:"."""
    return "".join(f"{m.role.capitalize()}: {m.content}\n" for m in messages) + "Assistant:"


class StopScanner:
    """Text as it is generated, cut at the first stop string: `feed` returns what can be sent now (held
    back: a tail that may be the start of a stop string) and whether a stop string was reached."""

    def __init__(self, stops: list[str]):
        self.stops, self.held, self.stopped = stops, "", False

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        self.held += text
        cut = min((i for i in (self.held.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            out, self.held, self.stopped = self.held[:cut], "", True
            return out
        keep = max((len(s) - 1 for s in self.stops), default=0)
        safe = len(self.held) - keep
        # a stop string cannot start before `safe`: send up to there
        out, self.held = self.held[: max(safe, 0)], self.held[max(safe, 0) :]
        return out

    def flush(self) -> str:
        out, self.held = ("" if self.stopped else self.held), ""
        return out


class OpenAIRoute(EngineRoute):
    """What the four OpenAI LitAPIs share: the prompt and stop strings of a request, the text as the
    engine draws it, and the envelope. (Each subclass's `decode_request` annotation tells LitServe which
    body to parse.)"""

    kind, id_prefix = "text_completion", "cmpl"

    def prompt_and_stops(self, r: Sampling) -> tuple[str, list[str]]:
        if isinstance(r, ChatRequest):
            return chat_prompt(r.messages), [TURN_END, *r.stop]
        return r.prompt, list(r.stop)

    async def pieces(self, r: Sampling):
        """The envelope (a dict), then the text in pieces (str) as it is drawn, cut at the first stop
        string (the request then ends: its slot is freed), then the end: (finish reason, usage,
        expert weights, mixing, version)."""
        prompt, stops = self.prompt_and_stops(r)
        data = utf8(prompt, "the prompt")
        text_of, scanner = codecs.getincrementaldecoder("utf-8")(errors="replace").decode, StopScanner(stops)
        header, drawn = None, None
        stream = self.sample(data, r.max_tokens, r.temperature, r.top_k, r.seed)
        try:
            async for item in stream:
                if isinstance(item, dict):
                    header, drawn = item, Drawn(item["names"])
                    yield self.envelope(r, header["version"], f"{self.id_prefix}-{uuid.uuid4().hex}", int(time.time()))
                    continue
                for row in item:
                    text = scanner.feed(text_of(bytes([drawn.add(row)])))
                    if text:
                        yield text
                    if scanner.stopped:
                        break
                if scanner.stopped:
                    break
        finally:
            await stream.aclose()  # a stop string reached: the engine frees the slot now
        tail = "" if scanner.stopped else scanner.feed(text_of(b"", final=True)) + scanner.flush()
        if tail:
            yield tail
        n = len(drawn.data)
        usage = {"prompt_tokens": len(data), "completion_tokens": n, "total_tokens": len(data) + n}
        finish = "stop" if scanner.stopped else "length"
        yield finish, usage, rounded(drawn.weights()), header["mixing"], header["version"]

    def envelope(self, r: Sampling, version: int, rid: str, created: int) -> dict:
        return {
            "id": rid,
            "object": self.kind,
            "created": created,
            "model": r.model,
            "system_fingerprint": f"moe-unlearn-v{version}",
        }


class CompletionsAPI(OpenAIRoute):
    """POST /v1/completions (and, as ChatAPI, /v1/chat/completions) without streaming. `stop` ends the
    text at the first stop string (finish_reason "stop")."""

    async def decode_request(self, request: CompletionRequest):
        return request

    async def predict(self, r: Sampling) -> dict:
        texts = []
        async for item in self.pieces(r):
            if isinstance(item, dict):
                head = item
            elif isinstance(item, str):
                texts.append(item)
            else:
                finish, usage, weights, mixing, version = item
        choice = self.choice("".join(texts), finish)
        return {**head, "choices": [choice], "usage": usage, **weights, "mixing": mixing, "version": version}

    async def encode_response(self, output):
        return output

    @staticmethod
    def choice(text: str, finish: str) -> dict:
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}


class ChatAPI(CompletionsAPI):
    kind, id_prefix = "chat.completion", "chatcmpl"

    async def decode_request(self, request: ChatRequest):
        return request

    @staticmethod
    def choice(text: str, finish: str) -> dict:
        return {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": None,
            "finish_reason": finish,
        }


class CompletionsStreamAPI(OpenAIRoute):
    """The streaming twin of /v1/completions: server-sent events as OpenAI sends them. The same seed gives
    the same text as without streaming."""

    def __init__(self, run_dir, engine_address: str, **kwargs):
        super().__init__(run_dir, engine_address, stream=True, **kwargs)

    async def decode_request(self, request: CompletionRequest):
        return request

    def chunk(self, text: str, finish: str | None) -> dict:
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}

    async def predict(self, r: Sampling):
        head = None
        async for item in self.pieces(r):
            if isinstance(item, dict):
                head = item
            elif isinstance(item, str):
                yield event({**head, "choices": [self.chunk(item, None)]})
            else:
                finish, usage, weights, mixing, version = item
        last = {**head, "choices": [self.chunk("", finish)]}
        yield event({**last, "usage": usage, **weights, "mixing": mixing, "version": version})
        yield "data: [DONE]\n\n"

    async def encode_response(self, outputs):
        async for output in outputs:
            yield output


class ChatStreamAPI(CompletionsStreamAPI):
    kind, id_prefix = "chat.completion.chunk", "chatcmpl"

    async def decode_request(self, request: ChatRequest):
        return request

    def chunk(self, text: str, finish: str | None) -> dict:
        delta = {"role": "assistant", "content": text} if finish is None else ({"content": text} if text else {})
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}


def event(data: dict) -> str:
    """One server-sent event."""
    return f"data: {json.dumps(data)}\n\n"
