"""`s2r serve MODEL_DIR`: an OpenAI-compatible server over the transformers backend (FastAPI + uvicorn).

Endpoints: GET /health, GET /v1/models, POST /v1/completions, POST /v1/chat/completions with `n`,
`temperature` (default 1, as in the OpenAI API), `top_p`, `max_tokens`, `stop`, `seed`. No streaming.
Every request body is checked against a pydantic model (serve_schema.py) before any work: a bad field
gets 400 with an OpenAI-style error body, a body over --max-body-bytes 413, a prompt that does not fit
the model's positions 400, a wrong method 405. Requests that arrive together are batched into one
backend call on one generation thread (requests with the same sampling settings share a batch); the
event loop only awaits their futures. Binds 127.0.0.1 unless told otherwise; with `--api-key` every
request but /health needs `Authorization: Bearer KEY`. User documentation: docs/serve.md.
"""

from __future__ import annotations

import asyncio
import copy
import hmac
import queue
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path

from s2r.config import arg
from s2r.models.backend import Completion, SamplingParams
from s2r.prompts import PromptConfig, SystemTemplateFields, model_prompt, render_prompt
from s2r.serve_schema import ChatRequest, CompletionRequest, error_body, validation_error_body


@dataclass
class ServeConfig(SystemTemplateFields):
    model: str = arg(help="model folder (save_pretrained layout)", positional=True)
    host: str = arg("127.0.0.1", help="address to bind; 0.0.0.0 exposes the server to the network")
    port: int = arg(8000, help="port (0 = any free port)")
    api_key: str | None = arg(None, help="require 'Authorization: Bearer KEY' on every request but /health", secret=True)
    served_name: str | None = arg(None, help="model name clients use (default: the folder name)")
    batch_size: int = arg(32, help="largest batch of one backend call")
    batch_wait_ms: float = arg(5.0, help="how long to wait for more requests to batch together")
    max_tokens_default: int = arg(512, help="max_tokens of a chat request that gives none "
                                  "(cut to the room the prompt leaves)")
    max_body_bytes: int = arg(1 << 20, help="largest request body in bytes; a larger one gets 413 unread")
    device: str = arg("auto", help="auto, cpu, cuda, cuda:1, ...")
    dtype: str = arg("auto", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16")


class ApiError(Exception):
    """An answer other than 200: the status and the fields of the OpenAI error body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.param, self.code = status, param, code


class Batcher:
    """Collects (prompt, params) jobs from requests and runs them in batches on one thread."""

    def __init__(self, backend, batch_size: int, wait_s: float):
        self.backend, self.batch_size, self.wait_s = backend, batch_size, wait_s
        self.jobs: queue.Queue[tuple[str, SamplingParams, Future]] = queue.Queue()
        threading.Thread(target=self._loop, daemon=True).start()

    def submit(self, jobs: list[tuple[str, SamplingParams]]) -> list[Future]:
        futures = []
        for prompt, params in jobs:
            f: Future = Future()
            self.jobs.put((prompt, params, f))
            futures.append(f)
        return futures

    def _loop(self) -> None:
        while True:
            jobs = [self.jobs.get()]
            deadline = time.monotonic() + self.wait_s
            while len(jobs) < self.batch_size:
                try:
                    jobs.append(self.jobs.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            groups: dict[SamplingParams, list] = {}  # requests that differ only in max_tokens share a call
            for job in jobs:
                groups.setdefault(replace(job[1], max_tokens=0), []).append(job)
            for params, group in groups.items():
                try:
                    results = self.backend.complete([p for p, _, _ in group], params, [q.max_tokens for _, q, _ in group])
                except Exception as e:  # report to every waiting request, keep serving
                    results = [Completion("", "error", 0, error=f"{type(e).__name__}: {e}")] * len(group)
                for (_, _, f), r in zip(group, results):
                    f.set_result(r)


class Server:
    """What the routes do: fit prompts to the model, queue them on the batcher, build the answers."""

    def __init__(self, cfg: ServeConfig, backend):
        self.cfg, self.backend = cfg, backend
        self.name = cfg.served_name or Path(cfg.model).resolve().name
        self.batcher = Batcher(backend, cfg.batch_size, cfg.batch_wait_ms / 1000)
        own = cfg.from_model(cfg.model, system="", template="auto")  # the model folder's s2r.json, else none and auto
        self.chat_prompt = PromptConfig(system=own.system, template=own.template)
        self.assistant_prefix = model_prompt(cfg.model).get("assistant_prefix", "")  # e.g. mistake tuning's tag
        # a copy for request threads (a fast tokenizer must not be used by two threads at once; the
        # batcher thread owns the backend's), used under a lock
        self.tokenizer, self.lock = copy.deepcopy(backend.tokenizer), threading.Lock()
        self.max_positions: int | None = backend.max_positions
        self.chars_per_token = max(map(len, self.tokenizer.get_vocab()))  # no token covers more characters

    def fit(self, prompt: str, max_tokens: int | None, default: int, param: str) -> int:
        """The prompt's budget of new tokens (max_tokens, or the default cut to the room left), once the
        prompt + max_tokens are known to fit the model's positions; ApiError(400) if they do not."""
        positions = self.max_positions
        if positions is None:
            return max_tokens or default
        if max_tokens is not None and max_tokens >= positions:
            raise ApiError(400, f"max_tokens must be less than the model's {positions} positions", "max_tokens")
        room = positions - (max_tokens or 1)  # prompt tokens that fit
        if len(prompt) > room * self.chars_per_token:  # more tokens than room, without tokenising
            raise ApiError(400, f"prompt of {len(prompt)} characters is longer than {room} tokens can be "
                           f"(max_tokens {max_tokens or 1} of {positions} positions)", param, "context_length_exceeded")
        bos = self.tokenizer.bos_token
        n = len(self.tokenizer(prompt, add_special_tokens=not (bos and prompt.startswith(bos)))["input_ids"])
        if n == 0:  # an empty prompt and a tokenizer without BOS: nothing to continue
            raise ApiError(400, "the prompt is empty once tokenised", param)
        if n > room:
            raise ApiError(400, f"prompt of {n} tokens and max_tokens {max_tokens or 1} exceed the model's "
                           f"{positions} positions", param, "context_length_exceeded")
        return max_tokens or min(default, positions - n)

    def prepare(self, req: CompletionRequest | ChatRequest) -> list[tuple[str, SamplingParams]]:
        """The (prompt, params) jobs of a validated request: n per prompt. Runs on a worker thread."""
        params = SamplingParams(temperature=req.temperature, top_p=req.top_p, stop=tuple(req.stop), seed=req.seed)
        with self.lock:
            if isinstance(req, ChatRequest):
                messages = [m.model_dump() for m in req.messages]
                if self.chat_prompt.system and messages[0]["role"] != "system":
                    messages = [{"role": "system", "content": self.chat_prompt.system}, *messages]
                try:
                    prompts = [render_prompt(messages, self.chat_prompt, self.tokenizer)]
                except Exception as e:  # a chat template may refuse a conversation (jinja's raise_exception)
                    raise ApiError(400, f"the chat template refused these messages: {e}", "messages") from None
                if all(m["role"] != "assistant" for m in messages):  # the first assistant turn, as the model was evaluated
                    prompts = [p + self.assistant_prefix for p in prompts]
                max_tokens, default, param = (req.max_completion_tokens or req.max_tokens,
                                              self.cfg.max_tokens_default, "messages")
            else:
                prompts, max_tokens, default, param = req.prompt, req.max_tokens, 16, "prompt"
            budgets = [self.fit(p, max_tokens, default, param) for p in prompts]
        return [(p, replace(params, max_tokens=b)) for p, b in zip(prompts, budgets) for _ in range(req.n)]

    async def complete(self, req: CompletionRequest | ChatRequest) -> dict:
        from starlette.concurrency import run_in_threadpool

        chat = isinstance(req, ChatRequest)
        jobs = await run_in_threadpool(self.prepare, req)
        results: list[Completion] = await asyncio.gather(*map(asyncio.wrap_future, self.batcher.submit(jobs)))
        errors = [r.error for r in results if r.finish_reason == "error"]
        if errors:
            raise ApiError(500, f"generation failed: {errors[0]}")
        choices = []
        for i, r in enumerate(results):
            choice = {"index": i, "finish_reason": r.finish_reason, "logprobs": None}
            if chat:
                choice["message"] = {"role": "assistant", "content": r.text}
            else:
                choice["text"] = r.text
            choices.append(choice)
        prompt_tokens = sum(r.prompt_tokens for r in results[:: req.n])
        completion_tokens = sum(r.num_tokens for r in results)
        return {
            "id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex,
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    def models(self) -> dict:
        return {"object": "list", "data": [{"id": self.name, "object": "model", "created": 0, "owned_by": "s2r"}]}


class Guard:
    """ASGI middleware run before any route: the API key (401) and the body limit (413, from
    Content-Length at once, else by counting the bytes as they arrive)."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int):
        self.app, self.max_body_bytes = app, max_body_bytes
        self.key = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from starlette.exceptions import HTTPException
        from starlette.responses import JSONResponse

        headers = dict(scope["headers"])  # lower-case names
        public = scope["path"].rstrip("/") == "/health"
        if self.key and not public and not hmac.compare_digest(headers.get(b"authorization", b""), self.key):
            answer = JSONResponse(error_body("missing or wrong API key", code="invalid_api_key"), 401)
            return await answer(scope, receive, send)
        too_large = f"request body over {self.max_body_bytes} bytes"
        if int(headers.get(b"content-length", 0)) > self.max_body_bytes:  # uvicorn has checked it is a number
            answer = JSONResponse(error_body(too_large, code="body_too_large"), 413)  # uvicorn discards the body
            return await answer(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body_bytes:  # a chunked body without Content-Length
                raise HTTPException(413, too_large)
            return message

        await self.app(scope, counted, send)


def make_app(cfg: ServeConfig, backend):
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse

    server = Server(cfg, backend)
    app = FastAPI(title="s2r serve", openapi_url=None, docs_url=None, redoc_url=None)
    app.add_middleware(Guard, api_key=cfg.api_key, max_body_bytes=cfg.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):  # 400 as the OpenAI API, not FastAPI's 422
        return JSONResponse(validation_error_body(list(exc.errors())), 400)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):  # 404, 405 (with Allow), 413
        message = f"{exc.detail}: {request.method} {request.url.path}"
        return JSONResponse(error_body(message, code=str(exc.status_code)), exc.status_code, exc.headers)

    @app.exception_handler(ApiError)
    async def api_error(request, exc: ApiError):
        return JSONResponse(error_body(str(exc), exc.param, exc.code, exc.status), exc.status)

    @app.exception_handler(Exception)
    async def crash(request, exc: Exception):  # a bug: still a JSON answer (uvicorn logs the traceback)
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}", status=500), 500)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict:
        return server.models()

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest) -> dict:
        return await server.complete(req)

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest) -> dict:
        return await server.complete(req)

    return app


def listen(host: str, port: int):
    """A socket bound to host:port (port 0: any free one); OSError in one line when it cannot be."""
    import socket

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def run_serve(cfg: ServeConfig) -> None:
    import uvicorn

    from s2r.models.hf import TransformersBackend

    sock = listen(cfg.host, cfg.port)  # a port in use stops here, before the model loads
    backend = TransformersBackend.from_pretrained(cfg.model, batch_size=cfg.batch_size, device=cfg.device, dtype=cfg.dtype)
    config = uvicorn.Config(make_app(cfg, backend), host=cfg.host, port=cfg.port, lifespan="off",
                            timeout_graceful_shutdown=5)  # listen backlog: uvicorn's 2048
    host, port = sock.getsockname()[:2]
    print(f"serving {cfg.model} at http://{host}:{port}/v1", flush=True)
    uvicorn.Server(config).run(sockets=[sock])
