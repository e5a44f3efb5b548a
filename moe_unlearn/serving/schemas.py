"""The bodies the server accepts, as pydantic models: FastAPI checks them before a request is queued
for a worker, so a bad request costs a worker nothing and never fails the batch it would have joined.

Strict types (no "5" for 5, no true for 1) and no unknown fields on our own routes, so a typo is an
error rather than a silently ignored default. The OpenAI-compatible route ignores fields it does not
know, as OpenAI clients expect. Size limits are the server's settings: see `limits.RequestLimits`.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

STRICT = ConfigDict(extra="forbid", strict=True)
SEED = Field(default=0, ge=0, lt=2**64, description="Seed of this request's own sampler.")
TEMPERATURE = Field(default=0.8, ge=0.0, le=100.0, allow_inf_nan=False, description="0: greedy.")
TOP_K = Field(default=0, ge=0, le=256, description="Sample among the k likeliest bytes (0: all).")


class GenerateRequest(BaseModel):
    """POST /generate and /generate/stream: continue `prompt` by `max_new_bytes` bytes."""

    model_config = STRICT
    prompt: str = Field(min_length=1, description="Text to continue (UTF-8, not empty).")
    max_new_bytes: int = Field(default=200, ge=0, description="Bytes to generate.")
    temperature: float = TEMPERATURE
    top_k: int = TOP_K
    seed: int = SEED


class ScoreRequest(BaseModel):
    """POST /score: bits per byte of `text`."""

    model_config = STRICT
    text: str = Field(min_length=1, description="Text to score (UTF-8, not empty).")


class Sampling(BaseModel):
    """What OpenAI's completions and chat APIs share. Tokens are bytes: `max_tokens` counts bytes. Unknown
    fields are ignored, as OpenAI clients expect; `stream` answers with server-sent events."""

    model_config = ConfigDict(extra="ignore", strict=True)
    model: str = "moe-unlearn"
    max_tokens: int = Field(default=16, ge=0)
    temperature: float = Field(default=1.0, ge=0.0, le=100.0, allow_inf_nan=False)
    top_p: float = 1.0
    top_k: int = TOP_K
    n: int = 1
    stream: bool = False
    stop: str | list[str] | None = Field(default=None, validate_default=True)  # a list after validation
    seed: int = SEED

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> list[str]:
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes at most 4 non-empty strings")
        return stops

    @field_validator("n")
    @classmethod
    def _one_choice(cls, v: int) -> int:
        if v != 1:
            raise ValueError("only n=1 is supported: send one request per completion")
        return v

    @field_validator("top_p")
    @classmethod
    def _no_top_p(cls, v: float) -> float:
        if v != 1.0:
            raise ValueError("top_p is not supported (nucleus sampling): use top_k")
        return v


class CompletionRequest(Sampling):
    """POST /v1/completions, OpenAI's legacy completions API."""

    prompt: str | list[str] = Field(description="A string (or a list holding one string).")

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[str]) -> str:
        if isinstance(v, list):
            if len(v) != 1:
                raise ValueError("give one prompt per request (a string, or a list of one string)")
            v = v[0]
        if not v:
            raise ValueError("prompt must not be empty")
        return v


ROLES = ("system", "developer", "user", "assistant")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    role: str
    content: str

    @field_validator("role")
    @classmethod
    def _known_role(cls, v: str) -> str:
        if v not in ROLES:
            raise ValueError(f"unknown role {v!r}: use one of {', '.join(ROLES)}")
        return v


class ChatRequest(Sampling):
    """POST /v1/chat/completions: the messages become one byte prompt (serving/openai.py, `chat_prompt`)."""

    messages: list[ChatMessage] = Field(min_length=1, description="The conversation so far (not empty).")


class ForgetBody(BaseModel):
    """POST /admin/forget: the arguments of `moe-unlearn forget` (`records` for --record, no --ids-file)."""

    model_config = STRICT
    records: list[str] = Field(default_factory=list, description="Record ids to forget.")
    match: str | None = Field(default=None, min_length=1, description="Forget every record containing this.")
    source: str | None = Field(default=None, description="Only this source (default: all).")
    dry_run: bool = False
    deadline: str | None = Field(default=None, description="Legal deadline (ISO date), recorded.")
    audit: bool = False
    method: Literal["exact", "gradient-ascent", "nabla-tau"] = "exact"


class DropBody(BaseModel):
    """POST /admin/drop: the arguments of `moe-unlearn drop`."""

    model_config = STRICT
    source: str | None = None
    expert: str | None = None
    dry_run: bool = False
    deadline: str | None = None
