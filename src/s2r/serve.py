"""`s2r serve MODEL_DIR`: an OpenAI-compatible server over the transformers backend.

Endpoints: GET /v1/models, GET /health, POST /v1/completions, POST /v1/chat/completions with
`n`, `temperature` (default 1, as in the OpenAI API), `top_p`, `max_tokens`, `stop`, `seed`.
No streaming. Requests that arrive together are batched into one backend call (requests with the
same sampling settings share a batch). Binds 127.0.0.1 unless told otherwise; with `--api-key` every
request needs `Authorization: Bearer KEY`.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from s2r.config import arg
from s2r.models.backend import Completion, SamplingParams
from s2r.prompts import PromptConfig, PromptFields, render_prompt


@dataclass
class ServeConfig(PromptFields):
    model: str = arg(help="model folder (save_pretrained layout)", positional=True)
    host: str = arg("127.0.0.1", help="address to bind; 0.0.0.0 exposes the server to the network")
    port: int = arg(8000, help="port (0 = any free port)")
    api_key: str | None = arg(None, help="require 'Authorization: Bearer KEY' on every request")
    served_name: str | None = arg(None, help="model name clients use (default: the folder name)")
    batch_size: int = arg(32, help="largest batch of one backend call")
    batch_wait_ms: float = arg(5.0, help="how long to wait for more requests to batch together")
    max_tokens_default: int = arg(512, help="max_tokens of a chat request that gives none")
    device: str = arg("auto", help="auto, cpu, cuda, cuda:1, ...")
    dtype: str = arg("auto", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16")


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Batcher:
    """Collects (prompt, params) jobs from request threads and runs them in batches on one thread."""

    def __init__(self, backend, batch_size: int, wait_s: float):
        self.backend, self.batch_size, self.wait_s = backend, batch_size, wait_s
        self.jobs: queue.Queue[tuple[str, SamplingParams, Future]] = queue.Queue()
        threading.Thread(target=self._loop, daemon=True).start()

    def submit(self, prompts: list[str], params: SamplingParams) -> list[Completion]:
        futures = []
        for p in prompts:
            f: Future = Future()
            self.jobs.put((p, params, f))
            futures.append(f)
        return [f.result() for f in futures]

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


def _sampling(body: dict, default_max: int) -> SamplingParams:
    stop = body.get("stop") or ()
    stop = (stop,) if isinstance(stop, str) else tuple(stop)
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens", default_max))
    try:
        params = SamplingParams(max_tokens=int(max_tokens), temperature=float(body.get("temperature", 1.0)),
                                top_p=float(body.get("top_p", 1.0)), stop=stop,
                                seed=None if body.get("seed") is None else int(body["seed"]))
    except (TypeError, ValueError) as e:
        raise BadRequest(400, f"bad sampling parameter: {e}") from None
    if params.max_tokens < 1 or params.temperature < 0 or not 0 < params.top_p <= 1:
        raise BadRequest(400, "need max_tokens ≥ 1, temperature ≥ 0, 0 < top_p ≤ 1")
    return params


class App:
    def __init__(self, cfg: ServeConfig, backend):
        self.cfg, self.backend = cfg, backend
        self.name = cfg.served_name or Path(cfg.model).resolve().name
        self.batcher = Batcher(backend, cfg.batch_size, cfg.batch_wait_ms / 1000)
        own = cfg.from_model(cfg.model, system="", template="auto")  # the model folder's s2r.json, else none and auto
        self.chat_prompt = PromptConfig(system=own.system, template=own.template)

    def completions(self, body: dict, chat: bool) -> dict:
        if body.get("stream"):
            raise BadRequest(400, "streaming is not supported")
        n = int(body.get("n", 1))
        if not 1 <= n <= 64:
            raise BadRequest(400, "n must be between 1 and 64")
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise BadRequest(400, "'messages' must be a non-empty list")
            if self.chat_prompt.system and isinstance(messages[0], dict) and messages[0].get("role") != "system":
                messages = [{"role": "system", "content": self.chat_prompt.system}, *messages]
            try:
                prompts = [render_prompt(messages, self.chat_prompt, self.backend.tokenizer)]
            except (KeyError, TypeError) as e:
                raise BadRequest(400, f"bad message: {e}") from None
            params = _sampling(body, self.cfg.max_tokens_default)
        else:
            prompt = body.get("prompt")
            prompts = [prompt] if isinstance(prompt, str) else prompt
            if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
                raise BadRequest(400, "'prompt' must be a string or a list of strings")
            params = _sampling(body, 16)  # the OpenAI default for /v1/completions
        jobs = [p for p in prompts for _ in range(n)]
        results = self.batcher.submit(jobs, params)
        errors = [r.error for r in results if r.finish_reason == "error"]
        if errors:
            raise BadRequest(500, errors[0])
        choices = []
        for i, r in enumerate(results):
            choice = {"index": i, "finish_reason": r.finish_reason, "logprobs": None}
            if chat:
                choice["message"] = {"role": "assistant", "content": r.text}
            else:
                choice["text"] = r.text
            choices.append(choice)
        prompt_tokens = sum(r.prompt_tokens for r in results[::n])
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


def make_handler(app: App):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # one short line per request on stderr
            sys.stderr.write(f"{self.address_string()} {fmt % args}\n")

        def _send(self, status: int, obj: dict) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str) -> None:
            self._send(status, {"error": {"message": message, "type": "invalid_request_error", "code": status}})

        def _authorized(self) -> bool:
            if app.cfg.api_key and self.headers.get("Authorization") != f"Bearer {app.cfg.api_key}":
                self._error(401, "missing or wrong API key")
                return False
            return True

        def do_GET(self):  # noqa: N802
            if self.path.rstrip("/") == "/health":
                return self._send(200, {"status": "ok"})
            if not self._authorized():
                return
            if self.path.rstrip("/") == "/v1/models":
                return self._send(200, app.models())
            self._error(404, f"no route {self.path}")

        def do_POST(self):  # noqa: N802
            if not self._authorized():
                return
            routes = {"/v1/completions": False, "/v1/chat/completions": True}
            path = self.path.rstrip("/")
            if path not in routes:
                return self._error(404, f"no route {self.path}")
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if not isinstance(body, dict):
                    raise BadRequest(400, "the body must be a JSON object")
                self._send(200, app.completions(body, chat=routes[path]))
            except json.JSONDecodeError as e:
                self._error(400, f"malformed JSON: {e}")
            except BadRequest as e:
                self._error(e.status, str(e))

    return Handler


def make_server(cfg: ServeConfig) -> ThreadingHTTPServer:
    from s2r.models.hf import TransformersBackend

    backend = TransformersBackend.from_pretrained(cfg.model, batch_size=cfg.batch_size, device=cfg.device, dtype=cfg.dtype)
    server = ThreadingHTTPServer((cfg.host, cfg.port), make_handler(App(cfg, backend)))
    server.daemon_threads = True
    return server


def run_serve(cfg: ServeConfig) -> None:
    server = make_server(cfg)
    host, port = server.server_address[:2]
    print(f"serving {cfg.model} at http://{host}:{port}/v1", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
