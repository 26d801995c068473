"""`s2r serve` under load: 256 clients at once over loopback, each one request, every answer must be 200.

Two servers over the same tiny model in the same run: batching on (--batch-size 32, the default) and
off (--batch-size 1: one generate call per request), so the table shows what batching buys. No
outside peer (vLLM, TGI) runs on this CPU-only machine. Rounds alternate A B A B so that drift of a
shared, noisy machine hits both alike. Prints a markdown section; `python bench/run.py` collects it.
"""

from __future__ import annotations

import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from servers import start_server  # noqa: E402

from s2r.models.tiny import TinyModelConfig, run_tiny_model  # noqa: E402


def one_round(port: int, clients: int, new_tokens: int) -> tuple[float, list[float]]:
    """(requests/s, latencies in s) of `clients` requests sent at once, each on its own connection."""
    start = threading.Barrier(clients + 1)

    def one(i: int) -> float:
        body = json.dumps({"prompt": f"Question: what is {i} * {i + 7}?\nAnswer:\n", "max_tokens": new_tokens,
                           "temperature": 0})
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        start.wait(timeout=60)
        t0 = time.perf_counter()
        conn.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        answer = json.loads(resp.read())
        conn.close()
        if resp.status != 200 or answer["usage"]["completion_tokens"] != new_tokens:
            raise RuntimeError(f"request {i}: {resp.status} {answer}")
        return time.perf_counter() - t0

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(one, i) for i in range(clients)]
        start.wait(timeout=60)
        t0 = time.perf_counter()
        latencies = [f.result(timeout=900) for f in futures]
        return clients / (time.perf_counter() - t0), latencies


def run(clients: int = 256, new_tokens: int = 8, rounds: int = 2) -> str:
    with tempfile.TemporaryDirectory() as d:
        run_tiny_model(TinyModelConfig(d))
        setups = {"batch 32 (default)": ["--batch-size", "32"], "batch 1 (no batching)": ["--batch-size", "1"]}
        servers = {name: start_server([d, *args]) for name, args in setups.items()}
        try:
            ports = {name: int(url.rsplit(":", 1)[1]) for name, (url, _) in servers.items()}
            for port in ports.values():
                one_round(port, 8, new_tokens)  # warm-up
            rates: dict[str, list[float]] = {name: [] for name in setups}
            lat: dict[str, list[float]] = {name: [] for name in setups}
            for _ in range(rounds):
                for name, port in ports.items():
                    rate, latencies = one_round(port, clients, new_tokens)
                    rates[name].append(rate)
                    lat[name] += latencies
        finally:
            for _, proc in servers.values():
                proc.terminate()
                proc.wait(timeout=30)
    rows = []
    for name in setups:
        r, q = rates[name], statistics.quantiles(lat[name], n=100)  # q[49] = p50, q[98] = p99
        rows.append(f"| s2r serve, {name} | {statistics.median(r):,.1f} ({min(r):,.1f}–{max(r):,.1f}) | "
                    f"{q[49]:.2f} | {q[98]:.2f} |")
    ratios = [a / b for a, b in zip(*rates.values())]
    return "\n".join([
        "## `s2r serve` under load: 256 concurrent clients",
        "",
        f"Model: `s2r tiny-model` (0.14M parameters, character tokenizer), fp32, CPU. {clients} clients connect at "
        f"once over loopback, each sends one /v1/completions request (greedy, {new_tokens} new tokens) and must get "
        f"200 (none was refused, reset or failed). {rounds} alternating rounds; requests/s as medians (min–max) "
        f"over the rounds, latency percentiles over all {rounds * clients} requests of a setup. No outside peer "
        "(vLLM, TGI) runs on this CPU-only machine; the peer is the same server with batching off.",
        "",
        "| | requests/s | p50 latency (s) | p99 latency (s) |",
        "|---|---|---|---|",
        *rows,
        f"| **batching on / off** | **{statistics.median(ratios):.1f}×** ({min(ratios):.1f}–{max(ratios):.1f}) | | |",
        "",
    ])


if __name__ == "__main__":
    print(run())
