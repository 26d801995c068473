"""A backend for any OpenAI-compatible server (vLLM, SGLang, TGI, `s2r serve`): /v1/completions and
/v1/chat/completions, with a timeout per request, retries with exponential backoff on connection
errors, 429, 5xx and bodies that are not JSON (a truncated answer), and at most `concurrency` requests in
flight. A request that still fails comes
back as a Completion with finish_reason "error" and the reason: callers count and report it.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from s2r.config import arg
from s2r.models.backend import Completion, SamplingParams

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


@dataclass(kw_only=True)
class HTTPFields:
    """The endpoint settings as command-line fields, for commands that talk to a server."""

    base_url: str = arg("http://127.0.0.1:8000/v1", help="http: server address")
    api_key: str | None = arg(None, help="http: API key (never written to an output)", secret=True)
    concurrency: int = arg(8, help="http: requests in flight")
    request_timeout: float = arg(120.0, help="http: seconds per request")
    retries: int = arg(4, help="http: retries per request (exponential backoff)")


class HTTPBackend:
    def __init__(self, base_url: str, model: str | None = None, api_key: str | None = None,
                 timeout: float = 120.0, retries: int = 4, concurrency: int = 8, backoff: float = 0.5,
                 tokenizer=None):
        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        self.api_key, self.timeout, self.retries, self.backoff = api_key, timeout, retries, backoff
        self.tokenizer = tokenizer  # optional: a local copy of the served model's tokenizer
        self._pool = ThreadPoolExecutor(max_workers=max(1, concurrency))
        self.model = model or self._first_model()

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # -- API

    def complete(self, prompts: Sequence[str], params: SamplingParams,
                 max_tokens: Sequence[int] | None = None) -> list[Completion]:
        budgets = max_tokens or [params.max_tokens] * len(prompts)
        bodies = [{"prompt": p, **self._sampling(params), "max_tokens": m} for p, m in zip(prompts, budgets)]
        return list(self._pool.map(lambda b: self._call("/completions", b), bodies))

    def chat(self, conversations: Sequence[list[dict]], params: SamplingParams) -> list[Completion]:
        bodies = [{"messages": m, **self._sampling(params)} for m in conversations]
        return list(self._pool.map(lambda b: self._call("/chat/completions", b), bodies))

    # -- plumbing

    def _sampling(self, p: SamplingParams) -> dict:
        body = {"model": self.model, "max_tokens": p.max_tokens, "temperature": p.temperature,
                "top_p": p.top_p, "n": 1}
        if p.stop:
            body["stop"] = list(p.stop)
        if p.seed is not None:
            body["seed"] = p.seed
        return body

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return json.loads(resp.read())

    def _first_model(self) -> str:
        resp, error = self._retrying("GET", "/models")
        try:
            return resp["data"][0]["id"]
        except (KeyError, IndexError, TypeError) as e:
            error = error or f"no model listed ({type(e).__name__}: {e})"
        raise ConnectionError(f"{self.base_url}/models: {error}; pass --model NAME or check --base-url")

    def _retrying(self, method: str, path: str, body: dict | None = None) -> tuple[dict | None, str]:
        """(the JSON answer, "") or (None, why the last try failed); retries what may pass next time."""
        error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                return self._request(method, path, body), ""
            except urllib.error.HTTPError as e:
                error = f"HTTP {e.code}: {e.read()[:300].decode(errors='replace')}"
                if e.code not in RETRY_STATUS:
                    break
            except (OSError, http.client.HTTPException) as e:  # refused, reset, timed out, cut short
                error = f"{type(e).__name__}: {e}"
            except ValueError as e:  # a body that is not JSON: truncated or garbled on the way
                error = f"malformed JSON body: {e}"
        return None, error

    def _call(self, path: str, body: dict) -> Completion:
        resp, error = self._retrying("POST", path, body)
        if resp is not None:
            try:
                choice = resp["choices"][0]
                text = choice["text"] if "text" in choice else choice["message"]["content"] or ""
                usage = resp.get("usage") or {}
                return Completion(text=text, finish_reason=choice.get("finish_reason") or "stop",
                                  num_tokens=int(usage.get("completion_tokens", 0)),
                                  prompt_tokens=int(usage.get("prompt_tokens", 0)))
            except (KeyError, IndexError, TypeError, ValueError) as e:
                error = f"malformed response: {type(e).__name__}: {e}"
        return Completion("", "error", 0, error=f"{self.base_url}{path}: {error}")
