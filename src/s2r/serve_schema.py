"""The request bodies of `s2r serve` as pydantic models, and the OpenAI-style error body.

Types are strict (no "1" for 1, no 1.5 for an int), floats finite, ranges as in the OpenAI API.
Fields the server does not know are ignored, as the OpenAI API does with fields it does not use.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

MAX_N = 64  # choices per prompt
MAX_CHOICES = 256  # prompts × n of one request
MAX_STOPS = 16


def _listed(v: object) -> object:
    """A string stands for a list of one (no union: an error names the field, not a union branch)."""
    return [v] if isinstance(v, str) else v


StopString = Annotated[str, Field(min_length=1, max_length=1024)]


class Sampling(BaseModel):
    """The fields both endpoints share."""

    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)

    model: str | None = None
    n: int = Field(1, ge=1, le=MAX_N)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)  # None: the endpoint's default
    stop: Annotated[list[StopString], BeforeValidator(_listed), Field(max_length=MAX_STOPS)] = []
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)  # what torch.manual_seed takes
    stream: bool = False

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: object) -> object:
        """`"temperature": null` means the default, as in the OpenAI API (whose fields are nullable)."""
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data

    @field_validator("stream")
    @classmethod
    def _no_streaming(cls, v: bool) -> bool:
        if v:
            raise ValueError("streaming is not supported")
        return v


class CompletionRequest(Sampling):
    """POST /v1/completions. Default max_tokens 16, as in the OpenAI API."""

    prompt: Annotated[list[str], BeforeValidator(_listed), Field(min_length=1, max_length=MAX_CHOICES)]

    @model_validator(mode="after")
    def _choices(self) -> CompletionRequest:
        if len(self.prompt) * self.n > MAX_CHOICES:
            raise ValueError(f"prompts × n must be at most {MAX_CHOICES}")
        return self


class Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(Sampling):
    """POST /v1/chat/completions; `max_completion_tokens` is the newer name of `max_tokens`."""

    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: int | None = Field(None, ge=1)


def error_body(message: str, param: str | None = None, code: str | None = None, status: int = 400) -> dict:
    """{"error": {...}} as the OpenAI API sends it."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def validation_error_body(errors: list[dict]) -> dict:
    """The error body of a request that failed validation: every problem in the message, the first one's
    field as `param` (dotted, e.g. messages.0.content) and its pydantic error type as `code`."""
    first = errors[0]
    if first["type"] == "json_invalid":  # loc is ("body", character offset)
        return error_body(f"malformed JSON at character {first['loc'][-1]}: {first['ctx']['error']}", None, "json_invalid")
    where = [".".join(str(x) for x in e["loc"][1:]) for e in errors]  # loc[0] is "body"
    message = "; ".join(f"{w or 'body'}: {e['msg']}" for w, e in zip(where, errors))
    return error_body(message, where[0] or None, first["type"])
