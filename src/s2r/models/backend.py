"""The one small interface every generation backend implements.

    backend.complete(prompts: list[str], params, max_tokens=None) -> list[Completion]   # text completion

`max_tokens`, when given, is each prompt's own budget of new tokens (in place of params.max_tokens), so
prompts with different budgets (the `s2r` loop's later rounds) share one call.

Backends: `TransformersBackend` (a local model folder, hf.py) and `HTTPBackend` (any OpenAI-compatible
server: vLLM, SGLang, TGI, `s2r serve`; http.py). Conversations are rendered to text by
`prompts.render_prompt` before they reach a backend, so every strategy can continue a partial
assistant message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 512  # new tokens at most
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()  # stop strings; like the OpenAI API, the match is not returned ...
    include_stop: bool = False  # ... unless this is set (backends with `keeps_stop_strings` only)
    seed: int | None = None
    logprobs: bool = False  # return per-token log-probs (transformers backend only)


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" (EOS or a stop string), "length" (max_tokens reached) or "error"
    num_tokens: int  # generated tokens, EOS included
    token_ids: list[int] | None = None  # generated ids, EOS included (None from HTTP servers)
    logprobs: list[float] | None = None  # log π(token) under the model, temperature 1
    error: str | None = None  # why, when finish_reason == "error"
    stop_string: str | None = None  # the stop string that ended it, when the backend knows
    prompt_tokens: int = 0
    extra: dict = field(default_factory=dict)


class Backend(Protocol):
    tokenizer: object | None  # a Hugging Face tokenizer when one is known (for chat templates)

    def complete(self, prompts: Sequence[str], params: SamplingParams,
                 max_tokens: Sequence[int] | None = None) -> list[Completion]: ...

    def close(self) -> None: ...


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, str | None]:
    """(text before the earliest stop string, the stop string) or (text, None)."""
    best, hit = len(text), None
    for s in stop:
        i = text.find(s)
        if 0 <= i < best:
            best, hit = i, s
    return text[:best], hit
