"""`s2r serve` for real: the official openai client and `s2r eval --backend http` against it."""

import json

import pytest
from servers import start_server

from s2r.cli import main
from s2r.models.backend import SamplingParams
from s2r.models.http import HTTPBackend

KEY = "sk-test"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model = tmp_path_factory.mktemp("served")
    assert main(["tiny-model", str(model), "--chat-template", "true"]) == 0
    url, proc = start_server([str(model), "--api-key", KEY, "--served-name", "tiny"])
    yield url, model
    proc.terminate()
    proc.wait(timeout=10)


def test_official_openai_client(server):
    import openai

    url, _ = server
    client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
    assert [m.id for m in client.models.list().data] == ["tiny"]
    comp = client.completions.create(model="tiny", prompt="Question: 1+1\nAnswer:\n", max_tokens=8, temperature=0, n=2)
    assert len(comp.choices) == 2 and comp.choices[0].text == comp.choices[1].text  # greedy
    assert comp.usage.completion_tokens == 16 and comp.choices[0].finish_reason == "length"
    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                          max_tokens=5, temperature=0.7, top_p=0.9, seed=1, stop=["\n"])
    assert chat.choices[0].message.role == "assistant" and "\n" not in chat.choices[0].message.content
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny", prompt="x", max_tokens=0)


def test_http_backend_concurrency_and_failures(server):
    url, _ = server
    backend = HTTPBackend(url, api_key=KEY, concurrency=4)
    assert backend.model == "tiny"
    outs = backend.complete([f"prompt {i}" for i in range(8)], SamplingParams(max_tokens=6))
    assert all(o.finish_reason == "length" and o.num_tokens == 6 for o in outs)
    # each prompt its own budget (the s2r loop's later rounds): the server batches them together
    outs = backend.complete([f"prompt {i}" for i in range(4)], SamplingParams(max_tokens=6), [2, 5, 3, 1])
    assert [o.num_tokens for o in outs] == [2, 5, 3, 1] and all(o.finish_reason == "length" for o in outs)
    chats = backend.chat([[{"role": "user", "content": "hey"}]], SamplingParams(max_tokens=4))
    assert chats[0].num_tokens == 4
    bad = HTTPBackend(url, model="tiny", api_key="wrong", retries=2, backoff=0.01)
    (o,) = bad.complete(["x"], SamplingParams(max_tokens=2))
    assert o.finish_reason == "error" and "401" in o.error  # not retried, reported
    dead = HTTPBackend("http://127.0.0.1:9", model="tiny", retries=1, backoff=0.01, timeout=2)
    (o,) = dead.complete(["x"], SamplingParams(max_tokens=2))
    assert o.finish_reason == "error" and "Connection" in o.error


def test_eval_over_http_end_to_end(server, tmp_path, data_dir):
    url, model = server
    out = tmp_path / "e"
    args = ["eval", "--backend", "http", "--base-url", url + "/v1", "--api-key", KEY, "--tokenizer", str(model),
            "--data", "gsm8k", "--limit", "4", "--max-tokens", "24", "--out", str(out)]
    assert main(args) == 0
    lines = (out / "trajectories.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(x)["tokens"] > 0 for x in lines)
    assert (out / "report.html").exists() and json.loads((out / "metrics.json").read_text())["benchmarks"]["gsm8k"]


def test_unreachable_endpoint_keeps_partial_output_and_says_so(tmp_path, data_dir, capsys):
    out = tmp_path / "t.jsonl"
    args = ["solve", "--backend", "http", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--retries", "0",
            "--data", "gsm8k", "--limit", "2", "--out", str(out), "--template", "plain"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "2 of 2 generations failed" in err and "run the same command again" in err and not out.exists()


def test_api_key_is_never_written(server, tmp_path, capsys):
    """--api-key reaches the server, and no output file, log or message holds it."""
    url, _ = server
    data = tmp_path / "p.jsonl"
    data.write_text('{"problem": "1+1", "answer": "2"}\n{"problem": "2+3", "answer": "5"}\n')
    out = tmp_path / "e"
    args = ["eval", "--backend", "http", "--base-url", url + "/v1", "--api-key", KEY, "--data", str(data),
            "--max-tokens", "8", "--out", str(out), "--template", "plain"]
    assert main(args) == 0
    printed = capsys.readouterr()
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in files} == {"trajectories.jsonl", "trajectories.jsonl.settings.json", "metrics.json",
                                       "report.html"}
    for p in files:
        assert KEY.encode() not in p.read_bytes(), p
    assert KEY not in printed.out + printed.err
    assert json.loads((out / "metrics.json").read_text())["config"]["api_key"] == "<set>"


def test_a_port_in_use_is_one_line_before_the_model_loads(tmp_path, capsys):
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        assert main(["serve", str(tmp_path / "no-model-here"), "--host", "127.0.0.1", "--port", str(port)]) == 2
    finally:
        taken.close()
    err = capsys.readouterr().err.strip()
    assert err == f"s2r serve: error: cannot listen on 127.0.0.1:{port}: Address already in use"


def test_a_chat_reply_starts_after_the_models_assistant_prefix(tmp_path):
    """A mistake-tuned model is served as it is evaluated: its first assistant turn starts with the tag."""
    from s2r.models.hf import TransformersBackend
    from s2r.prompts import PromptConfig, write_model_prompt
    from s2r.serve import ServeConfig, Server
    from s2r.serve_schema import ChatRequest

    assert main(["tiny-model", str(tmp_path), "--chat-template", "true"]) == 0
    write_model_prompt(tmp_path, PromptConfig(system="", template="plain", assistant_prefix="[Correct rationale]\n"))
    server = Server(ServeConfig(model=str(tmp_path)), TransformersBackend.from_pretrained(str(tmp_path), device="cpu"))
    first = [{"role": "user", "content": "1+1"}]
    (prompt, _), = server.prepare(ChatRequest(messages=first, max_tokens=4))
    assert prompt == "Question: 1+1\nAnswer:\n[Correct rationale]\n"
    later = [*first, {"role": "assistant", "content": "2"}, {"role": "user", "content": "Sure?"}]
    (prompt, _), = server.prepare(ChatRequest(messages=later, max_tokens=4))
    assert prompt == "Question: 1+1\nAnswer:\n2\n\nQuestion: Sure?\nAnswer:\n"
