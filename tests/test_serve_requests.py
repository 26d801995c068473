"""`s2r serve` under bad requests and load: every request gets an answer, 200 or a 4xx JSON error.

One server over a tiny char-level model (2048 positions) in a subprocess, spoken to over loopback.
"""

import http.client
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import start_server

from s2r.cli import main

POSITIONS = 2048
LIMIT = 1 << 20  # the default --max-body-bytes


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model = tmp_path_factory.mktemp("served")
    assert main(["tiny-model", str(model), "--chat-template", "true", "--max-positions", str(POSITIONS)]) == 0
    url, proc = start_server([str(model), "--max-tokens-default", "8"])
    yield url.rsplit(":", 1)[1]
    proc.terminate()
    proc.wait(timeout=20)


def request(port: str, path: str, body: bytes | None = None, method: str = "POST",
            headers: dict | None = None, timeout: float = 60) -> tuple[int, dict, dict]:
    """(status, JSON body, headers); raises on a dropped connection or a body that is not JSON."""
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read()), dict(resp.getheaders())
    finally:
        conn.close()


def assert_openai_error(status: int, body: dict, want: int) -> dict:
    assert status == want, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
    assert isinstance(err["message"], str) and err["message"]
    return err


@pytest.mark.parametrize("path, body, param", [
    ("/v1/completions", b'{"prompt": "x", "stop": 7}', "stop"),
    ("/v1/completions", b'{"prompt": "x", "temperature": NaN}', "temperature"),
    ("/v1/completions", b'{"prompt": "x", "temperature": Infinity}', "temperature"),
    ("/v1/completions", b'{"prompt": "x", "seed": %d}' % 10**30, "seed"),
    ("/v1/completions", b'{"prompt": "x", "n": 0}', "n"),
    ("/v1/completions", b'{"prompt": "x", "top_p": 0}', "top_p"),
    ("/v1/completions", b'{"prompt": "x", "max_tokens": "5"}', "max_tokens"),
    ("/v1/completions", b'{"prompt": "x", "max_tokens": 0}', "max_tokens"),
    ("/v1/completions", b'{"prompt": "x", "stream": true}', "stream"),
    ("/v1/completions", b'{"prompt": [1, 2]}', "prompt.0"),
    ("/v1/completions", b'{"prompt": ["x"], "n": 64, "stop": ["a", ""]}', "stop.1"),
    ("/v1/completions", b'{"max_tokens": 2}', "prompt"),
    ("/v1/completions", b'{"prompt": ["x", ""]}', "prompt"),  # no BOS: an empty prompt has no tokens
    ("/v1/completions", b'{"prompt": "x"', None),  # malformed JSON
    ("/v1/completions", b'[]', None),
    ("/v1/chat/completions", b'{"messages": []}', "messages"),
    ("/v1/chat/completions", b'{"messages": [{"role": "robot", "content": "hi"}]}', "messages.0.role"),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": 3}]}', "messages.0.content"),
])
def test_a_bad_field_gets_400_with_an_openai_error_body(server, path, body, param):
    status, answer, _ = request(server, path, body)
    err = assert_openai_error(status, answer, 400)
    assert err["param"] == param, err


def test_an_unknown_method_gets_405_and_an_unknown_path_404(server):
    status, body, headers = request(server, "/v1/completions", method="DELETE")
    assert_openai_error(status, body, 405)
    assert headers["allow"] == "POST"
    assert_openai_error(*request(server, "/v1/models", b"{}", method="PUT")[:2], 405)
    assert_openai_error(*request(server, "/v2/nothing", method="GET")[:2], 404)


def test_a_body_over_the_limit_gets_413_before_it_is_sent(server):
    with socket.create_connection(("127.0.0.1", int(server)), timeout=30) as s:  # headers only, no body
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % (10 * LIMIT))
        resp = http.client.HTTPResponse(s)
        resp.begin()
        assert_openai_error(resp.status, json.loads(resp.read()), 413)


def test_a_10_mb_prompt_gets_413_and_a_chunked_body_over_the_limit_too(server):
    big = json.dumps({"prompt": "x" * (10 * LIMIT)}).encode()
    assert_openai_error(*request(server, "/v1/completions", big)[:2], 413)
    chunks = (big[i : i + 65536] for i in range(0, len(big), 65536))  # no Content-Length: counted on arrival
    status, body, _ = request(server, "/v1/completions", chunks)  # http.client sends it chunked
    assert_openai_error(status, body, 413)


def test_a_prompt_longer_than_the_context_gets_400(server):
    # over the cheap bound (characters > positions × the longest token): refused without tokenising
    status, body, _ = request(server, "/v1/completions", json.dumps({"prompt": "a" * (LIMIT - 100)}).encode())
    err = assert_openai_error(status, body, 400)
    assert err["code"] == "context_length_exceeded" and "characters" in err["message"] and err["param"] == "prompt"
    # under it, tokenised: 2000 prompt tokens + 100 new ones do not fit in 2048 positions
    status, body, _ = request(server, "/v1/completions", json.dumps({"prompt": "a" * 2000, "max_tokens": 100}).encode())
    err = assert_openai_error(status, body, 400)
    assert err["code"] == "context_length_exceeded" and "tokens" in err["message"]
    status, body, _ = request(server, "/v1/completions", json.dumps({"prompt": "a", "max_tokens": POSITIONS}).encode())
    assert assert_openai_error(status, body, 400)["param"] == "max_tokens"
    # the same prompt with room left is answered; a chat without max_tokens gets the room that is left
    status, body, _ = request(server, "/v1/completions", json.dumps({"prompt": "a" * 2000, "max_tokens": 4}).encode())
    assert status == 200 and body["usage"]["completion_tokens"] == 4
    chat = {"messages": [{"role": "user", "content": "a" * 2020}], "temperature": 0}  # 2044 tokens with the template
    status, body, _ = request(server, "/v1/chat/completions", json.dumps(chat).encode())
    assert status == 200 and body["usage"]["total_tokens"] <= POSITIONS and body["usage"]["completion_tokens"] < 8, body


def test_nulls_tiny_temperatures_and_extreme_seeds_are_answered(server):
    for extra in ({"temperature": None, "n": None, "stop": None, "seed": None}, {"temperature": 1e-40}, {"seed": 2**64 - 1}, {"seed": -(2**63)}, {"top_p": 1e-300}):
        status, body, _ = request(server, "/v1/completions", json.dumps({"prompt": "q", "max_tokens": 3, **extra}).encode())
        # sampled at temperature 1 with no seed, the untrained model may draw its end token (counted) before the budget
        used, (choice,) = body["usage"]["completion_tokens"], body["choices"]
        assert status == 200 and (choice["finish_reason"], used) in {("length", 3), ("stop", 1), ("stop", 2), ("stop", 3)}, \
            (extra, body)


# Random bodies: the fields the server reads, with values of the right type or not, in range or not.
scalars = st.none() | st.booleans() | st.integers(-3, 3) | st.just(10**30) | st.floats() | st.text(max_size=8)
values = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
                      max_leaves=5)
message = st.fixed_dictionaries({}, optional={"role": st.sampled_from(["system", "user", "assistant", "tool"]) | values,
                                               "content": st.text(max_size=20) | values})
fields = {
    "prompt": st.text(max_size=30) | st.lists(st.text(max_size=10), max_size=3) | values,
    "messages": st.lists(message, max_size=3) | values,
    "n": st.integers(-1, 3) | values,
    "temperature": st.floats(-1, 3) | values,
    "top_p": st.floats(-0.5, 1.5) | values,
    "max_tokens": st.integers(-2, 6) | st.integers(min_value=POSITIONS) | values,
    "stop": st.text(max_size=3) | st.lists(st.text(max_size=3), max_size=3) | values,
    "seed": st.integers() | values,
    "stream": st.booleans() | values,
}
bodies = st.fixed_dictionaries({}, optional=fields) | values


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/v1/completions", "/v1/chat/completions"]), body=bodies)
def test_any_json_body_gets_200_or_a_4xx_json_error(server, path, body):
    status, answer, _ = request(server, path, json.dumps(body).encode())  # NaN and Infinity as Python writes them
    if status == 200:
        assert answer["choices"] and answer["usage"]["completion_tokens"] >= 0
    else:
        assert_openai_error(status, answer, 400)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=64))
def test_any_bytes_get_a_4xx_json_error(server, raw):
    status, answer, _ = request(server, "/v1/completions", raw)
    assert_openai_error(status, answer, 400)


@pytest.mark.slow
def test_256_concurrent_clients_are_all_answered(server):
    clients = 256
    start = threading.Barrier(clients)

    def one(i: int) -> int:
        start.wait(timeout=60)  # all connect at once
        body = json.dumps({"prompt": f"question {i}", "max_tokens": 4, "temperature": 0}).encode()
        status, answer, _ = request(server, "/v1/completions", body, timeout=300)
        assert answer["choices"][0]["finish_reason"] == "length"
        return status

    with ThreadPoolExecutor(clients) as pool:
        statuses = list(pool.map(one, range(clients), timeout=600))  # a reset raises here
    assert statuses == [200] * clients
