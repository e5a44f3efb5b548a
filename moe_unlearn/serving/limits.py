"""What the server refuses before a worker sees it, with one clear line each and never the request's text.

`RequestLimits` (ASGI middleware) checks the raw body of every POST: its size and valid UTF-8 (413, 400),
and on the model routes the prompt or text within the server's byte limit (413) and the requested output
within its limit (422). It runs in the HTTP process, ahead of FastAPI's own checks (JSON syntax, types,
missing and unknown fields: 422, one line per field from `add_error_handlers`), so a bad request is
answered at once and never reaches a batch: with batching on, an error raised inside a worker would fail
every request of its batch.
"""

import json
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


@dataclass(frozen=True)
class Limits:
    max_prompt_bytes: int = 4096  # /generate, /generate/stream, /v1/completions: prompt size in UTF-8 bytes
    max_new_bytes: int = 1024  # bytes a request may ask to generate
    max_text_bytes: int = 16384  # /score: text size in UTF-8 bytes
    max_body_bytes: int = 1 << 20  # any POST body


@dataclass(frozen=True)
class Checked:
    """What `RequestLimits` checks on one route: the text field and its limit, the output-length field."""

    text_field: str  # a string, a list of one string, or (chat) a list of messages with "content"
    max_text_bytes: int
    output_field: str | None = None
    max_output: int = 0
    streams: bool = False  # a body with "stream": true goes to the route's streaming twin (openai_api.py)


class RequestLimits:
    """ASGI middleware: refuse POST bodies over `max_body_bytes` or not UTF-8, and on the routes in `checked`
    (path -> Checked) texts or requested outputs over their limits."""

    def __init__(self, app, checked: dict[str, Checked], max_body_bytes: int):
        self.app, self.checked, self.max_body_bytes = app, checked, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        received, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            received += message.get("body", b"")
            more = message.get("more_body", False)
            if len(received) > self.max_body_bytes:
                return await _refuse(scope, send, 413, f"request body is over {self.max_body_bytes:,} bytes")
        body = bytes(received)
        rule = self.checked.get(scope["path"])
        problem = check_body(body, rule)
        if problem is not None:
            return await _refuse(scope, send, *problem)

        # Every POST route takes JSON: read the body as JSON whatever its Content-Type (`curl -d` says form).
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
        scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        if rule is not None and rule.streams and wants_stream(body):
            path = scope["path"] + STREAM_SUFFIX
            scope = {**scope, "path": path, "raw_path": path.encode()}
            send = event_stream(send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


STREAM_SUFFIX = "/stream"  # an OpenAI route's streaming twin (serving/openai_api.py)


def wants_stream(body: bytes) -> bool:
    """Whether an OpenAI request asks for server-sent events ("stream": true)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("stream") is True


def event_stream(send):
    """`send` that labels a successful response as server-sent events (LitServe's streams say text/plain)."""

    async def labelled(message):
        if message["type"] == "http.response.start" and message["status"] == 200:
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"content-type"]
            message = {**message, "headers": [*headers, (b"content-type", b"text/event-stream; charset=utf-8")]}
        await send(message)

    return labelled


def texts_of(value) -> list[str] | None:
    """The strings a checked field holds: a string, a list of one string (OpenAI prompts), or the contents
    of a list of chat messages; None for anything else (FastAPI then names the type error)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return value
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        return [m["content"] for m in value if isinstance(m.get("content"), str)]
    return None


def check_body(body: bytes, rule: Checked | None) -> tuple[int, str] | None:
    """(status, message) if the body breaks a limit, else None. Malformed JSON and wrong types are left to
    FastAPI, which names the field and the expected type; JSON nested too deep for any parser is refused
    here (FastAPI's parser would raise RecursionError: a 500)."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as e:
        return 400, f"request body is not valid UTF-8 (bad byte at offset {e.start})"
    try:
        data = json.loads(body)
    except ValueError:
        return None
    except RecursionError:
        return 400, "request body is JSON nested too deeply"
    if rule is None or not isinstance(data, dict):
        return None
    texts = texts_of(data.get(rule.text_field))
    if texts is not None:
        for text in texts:
            try:  # a JSON escape can carry a lone surrogate (\ud800), which no UTF-8 encoder takes
                text.encode("utf-8")
            except UnicodeEncodeError as e:
                return 422, f"{rule.text_field} is not valid Unicode (a lone surrogate at character {e.start})"
        size = sum(len(text.encode("utf-8")) for text in texts)
        if size > rule.max_text_bytes:
            return 413, f"{rule.text_field} is {size:,} bytes; this server takes at most {rule.max_text_bytes:,}"
    wanted = data.get(rule.output_field) if rule.output_field else None
    if isinstance(wanted, int) and not isinstance(wanted, bool) and wanted > rule.max_output:
        return 422, f"{rule.output_field} is {wanted:,}; this server generates at most {rule.max_output:,} bytes"
    return None


def error_response(path: str, status: int, detail: str) -> JSONResponse:
    """{"detail": ...}, and on the OpenAI route also OpenAI's {"error": {"message", ...}} (what its clients show)."""
    body: dict = {"detail": detail}
    if path.startswith("/v1/"):
        body["error"] = {"message": detail, "type": "invalid_request_error", "param": None, "code": None}
    return JSONResponse(body, status_code=status)


async def _refuse(scope, send, status: int, detail: str) -> None:
    await error_response(scope["path"], status, detail)(scope, _no_body, send)


async def _no_body():
    return {"type": "http.request", "body": b"", "more_body": False}


def add_error_handlers(app: FastAPI) -> None:
    """422 with one line naming each bad field (never echoing its value: it may be record text)."""

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request.url.path, 422, describe(exc.errors()))


def describe(errors) -> str:
    parts = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ()) if p != "body"]
        if e.get("type") == "json_invalid":
            where = f" at offset {loc[0]}" if loc else ""
            parts.append(f"body is not valid JSON ({e.get('ctx', {}).get('error', 'decode error')}{where})")
        elif e.get("type") == "missing":
            parts.append(f"missing field {'.'.join(loc)}")
        elif e.get("type") == "extra_forbidden":
            parts.append(f"unknown field {'.'.join(loc)}")
        else:
            message = str(e.get("msg", "invalid")).removeprefix("Value error, ")
            parts.append(f"{'.'.join(loc) or 'body'}: {message}")
    return "; ".join(parts) or "invalid request"
