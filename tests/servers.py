"""Start `s2r serve` in a subprocess for tests and wait until it answers."""

import socket
import subprocess
import sys
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: list[str]) -> tuple[str, subprocess.Popen]:
    """(base URL, process) of `s2r serve ARGS --port FREE`, once /health answers."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "s2r.cli", "serve", *args, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # uvicorn logs each request
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120  # importing torch and transformers is slow on a busy machine
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            return url, proc
        except OSError:
            assert proc.poll() is None, "server exited"
            time.sleep(0.1)
    proc.kill()
    raise TimeoutError("s2r serve did not start")
