"""Hostile input against every command that reads user files: a non-zero exit and ONE stderr line
that names the path (and line), never a traceback; text with a lone surrogate round-trips; an
endpoint that cuts its answer short is retried, counted and reported."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s2r.cli import main
from s2r.jsonl import DataError, dumps, iter_jsonl, write_atomic, write_json_atomic
from s2r.models.backend import SamplingParams
from s2r.models.http import HTTPBackend

EVERY_TYPE_WRONG = {k: {"a": 1} for k in (
    "id", "problem", "answer", "gold", "response", "benchmark", "attempts", "tokens", "truncated", "sample", "text",
    "grade", "agrees", "wrong", "solution", "verification", "completion", "spans")}
BAD_FILES = {  # name -> file content (None: a folder)
    "empty": b"",
    "blank": b"\n  \n",
    "folder": None,
    "binary": b"\x80\x81\xfe\xff\x00\x9c garbage \xc3\x28\n",
    "non-object": b'[1, 2, 3]\n',
    "missing-fields": b'{"x": 1}\n',
    "wrong-types": (json.dumps(EVERY_TYPE_WRONG) + "\n").encode(),
    "nested": b"[" * 100_000 + b"]" * 100_000 + b"\n",
}
SFT_RECORD = {"problem": "1+1", "completion": "2", "spans": [[0, 1]]}


def commands(tmp_path, model):
    """Every command that reads a user file: its arguments with {f} for the file."""
    out = str(tmp_path / "out")
    return {
        "check": ["check", "{f}", "--out", out + ".jsonl"],
        "metrics": ["metrics", "{f}"],
        "data": ["data", "{f}"],
        "solve": ["solve", "--data", "{f}", "--out", out + ".jsonl", "--model", model],
        "eval": ["eval", "--data", "{f}", "--out", out, "--model", model],
        "sample": ["sample", "--data", "{f}", "--out", out + ".jsonl", "--model", model],
        "verify": ["verify", "{f}", "--out", out + ".jsonl", "--cache", str(tmp_path / "cache.jsonl")],
        "build": ["build", "{f}", "--out", out + ".jsonl"],
        "hard": ["hard", "{f}", "--out", out + ".jsonl"],
        "sft": ["sft", "{f}", "--model", model, "--out", out, "--device", "cpu"],
        "rl": ["rl", model, "--data", "{f}", "--out", out, "--device", "cpu"],
        "offline": ["offline", model, "--data", "{f}", "--out", out, "--device", "cpu"],
        "dpo": ["dpo", "{f}", "--model", model, "--out", out, "--device", "cpu"],
    }


def one_line_error(capsys, argv, *names, after_work=False):
    """Run `s2r ARGV`; it must exit 2 with one stderr line `s2r CMD: error: ...` naming every name
    (after_work: progress lines may come before it)."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith(f"s2r {argv[0]}: error: "), err
    assert len(lines) == 1 or (after_work and not any(": error: " in ln for ln in lines[:-1])), err
    assert "Traceback" not in err
    for name in names:
        assert name in lines[-1], (name, lines[-1])
    return lines[-1]


def bad_file(tmp_path, kind):
    path = tmp_path / f"{kind}.jsonl"
    if BAD_FILES[kind] is None:
        path.mkdir()
    else:
        path.write_bytes(BAD_FILES[kind])
    return path


@pytest.mark.parametrize("kind", list(BAD_FILES))
@pytest.mark.parametrize("command", ["check", "metrics", "data", "solve", "eval", "sample", "verify", "build", "hard",
                                     "sft", "rl", "offline", "dpo"])
def test_bad_input_file(tmp_path, capsys, command, kind):
    path = bad_file(tmp_path, kind)
    argv = [a.replace("{f}", str(path)) for a in commands(tmp_path, str(tmp_path / "no-model"))[command]]
    line = one_line_error(capsys, argv, str(path))
    if kind not in ("empty", "blank", "folder"):
        assert f"{path}:1:" in line  # the record's line too
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.jsonl").exists()


def test_missing_file_and_bad_config_file(tmp_path, capsys):
    one_line_error(capsys, ["check", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o.jsonl")],
                   str(tmp_path / "nope.jsonl"), "no such file")
    folder = tmp_path / "conf"
    folder.mkdir()
    one_line_error(capsys, ["metrics", "x.jsonl", "--config", str(folder)], str(folder))
    for text in (b"\x80\x81 garbage", b"a: [1, 2\n", b"- a list\n"):
        (tmp_path / "c.yaml").write_bytes(text)
        one_line_error(capsys, ["metrics", "x.jsonl", "--config", str(tmp_path / "c.yaml")], str(tmp_path / "c.yaml"))


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    (root / "empty").mkdir()
    (root / "file").write_text("not a model")
    (root / "no-config").mkdir()
    (root / "no-config" / "tokenizer.json").write_text("{}")
    (root / "broken").mkdir()
    (root / "broken" / "config.json").write_text("{not json")
    return {"missing": root / "missing" / "model", "file": root / "file", "empty": root / "empty",
            "no-config": root / "no-config", "broken": root / "broken"}


@pytest.mark.parametrize("kind", ["missing", "file", "empty", "no-config", "broken"])
@pytest.mark.parametrize("command", ["solve", "eval", "sample", "sft", "rl", "offline", "dpo", "serve", "tokenizer"])
def test_bad_model_folder(tmp_path, capsys, bad_models, command, kind):
    model = str(bad_models[kind])
    sft, pairs = tmp_path / "sft.jsonl", tmp_path / "pairs.jsonl"
    sft.write_text(json.dumps(SFT_RECORD) + "\n")
    pairs.write_text(json.dumps(trajectory()) + "\n" + json.dumps(trajectory(
        sample=1, text="\\boxed{2}", attempts=[{"answer": "2", "grade": "correct", "verdict": None}])) + "\n")
    out = str(tmp_path / "out")
    argv = {
        "solve": ["solve", "--data", "arith:val", "--limit", "1", "--out", out + ".jsonl", "--model", model],
        "eval": ["eval", "--data", "arith:val", "--limit", "1", "--out", out, "--model", model],
        "sample": ["sample", "--data", "arith:val", "--limit", "1", "--out", out + ".jsonl", "--model", model],
        "sft": ["sft", str(sft), "--model", model, "--out", out, "--device", "cpu", "--tensorboard", "false"],
        "rl": ["rl", model, "--limit", "1", "--out", out, "--device", "cpu", "--tensorboard", "false"],
        "offline": ["offline", model, "--limit", "1", "--out", out, "--device", "cpu", "--tensorboard", "false"],
        "dpo": ["dpo", str(pairs), "--model", model, "--out", out, "--device", "cpu", "--tensorboard", "false"],
        "serve": ["serve", model, "--port", "0"],
        "tokenizer": ["eval", "--backend", "http", "--tokenizer", model, "--data", "arith:val", "--limit", "1",
                      "--out", out, "--base-url", "http://127.0.0.1:9"],
    }[command]
    line = one_line_error(capsys, argv, f"cannot load model {model!r}")
    assert {"missing": "no such folder", "file": "not a folder", "empty": "the folder is empty",
            "no-config": "no config.json", "broken": "config"}[kind] in line


def test_hub_name_that_is_no_folder(tmp_path, capsys):
    """A name that could be a Hub id is tried there; offline, that fails in one line."""
    one_line_error(capsys, ["solve", "--data", "arith:val", "--limit", "1", "--out", str(tmp_path / "t.jsonl"), "--model",
                            "no-such-org/no-such-model"],
                   "cannot load model 'no-such-org/no-such-model': no such folder, and the Hub could not provide it")


def test_sft_names_file_and_line(tmp_path, capsys):
    path = tmp_path / "sft.jsonl"
    path.write_text(json.dumps(SFT_RECORD) + "\n" + json.dumps({**SFT_RECORD, "spans": [[0, 9]]}) + "\n")
    one_line_error(capsys, ["sft", str(path), "--model", "m", "--out", str(tmp_path / "o")], f"{path}:2:", "span")
    path.write_text(json.dumps(SFT_RECORD) + "\n" + json.dumps({"problem": "x"}) + "\n")
    one_line_error(capsys, ["sft", str(path), "--model", "m", "--out", str(tmp_path / "o")], f"{path}:2:", "'completion'")


# ----------------------------------------------------------------------------------- lone surrogates


def test_lone_surrogate_round_trips(tmp_path, capsys):
    """'\\ud800' is valid JSON: check grades the record and writes it; the output reads back the same."""
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text('{"response": "odd \\ud800 text, \\\\boxed{2}", "gold": "2", "note": "\\udfff"}\n')
    assert main(["check", str(src), "--out", str(out)]) == 0
    (record,) = [r for _, r in iter_jsonl(out)]
    assert record["response"] == "odd \ud800 text, \\boxed{2}" and record["note"] == "\udfff"
    assert record["verdict"] == "correct"
    assert json.loads(dumps({"a": "x\ud83d"})) == {"a": "x\ud83d"}
    write_json_atomic(tmp_path / "m.json", {"t": "\udc80"})
    assert json.loads((tmp_path / "m.json").read_text()) == {"t": "\udc80"}
    write_atomic(tmp_path / "r.html", "<p>\ud800</p>")  # the report: the escape, as text
    assert (tmp_path / "r.html").read_text() == "<p>\\ud800</p>"


def trajectory(**fields):
    return {"benchmark": "b", "id": "1", "problem": "1+1", "gold": "2", "sample": 0, "text": "\\boxed{3}",
            "attempts": [{"answer": "3", "grade": "incorrect", "verdict": None}], "tokens": 3, "truncated": False,
            **fields}


def test_lone_surrogate_in_metrics_hard_build(tmp_path, capsys):
    traj = tmp_path / "t.jsonl"
    traj.write_text(json.dumps(trajectory(problem="x \ud800")) + "\n")
    assert main(["metrics", str(traj), "--out", str(tmp_path / "m.json")]) == 0
    assert main(["hard", str(traj), "--out", str(tmp_path / "h.jsonl")]) == 0
    assert [r["problem"] for _, r in iter_jsonl(tmp_path / "h.jsonl")] == ["x \ud800"]
    verified = {**trajectory(problem="y \udfff"), "grade": "correct", "agrees": True, "wrong": 0, "answer": "2",
                "solution": "It is \\boxed{2}.", "verification": "ok", "verdict": "correct"}
    (tmp_path / "v.jsonl").write_text(json.dumps(verified) + "\n")
    assert main(["build", str(tmp_path / "v.jsonl"), "--out", str(tmp_path / "b.jsonl"), "--kind", "plain"]) == 0
    assert [r["problem"] for _, r in iter_jsonl(tmp_path / "b.jsonl")] == ["y \udfff"]


@pytest.mark.parametrize("command", ["solve", "sft", "dpo"])
def test_lone_surrogate_refused_where_a_tokenizer_reads_it(tmp_path, capsys, command):
    path = tmp_path / "in.jsonl"
    records = {"solve": [{"problem": "1+\ud800", "answer": "2"}], "sft": [{**SFT_RECORD, "completion": "\udfff"}],
               "dpo": [trajectory(text="\ud800"), trajectory(sample=1, attempts=[{"answer": "2", "grade": "correct"}])]}
    path.write_text("".join(json.dumps(r) + "\n" for r in records[command]))
    argv = [a.replace("{f}", str(path)) for a in commands(tmp_path, "m")[command]]
    one_line_error(capsys, argv, f"{path}:1:" if command != "dpo" else str(path), "surrogate")


# ----------------------------------------------------------------------------------- the readers, fuzzed

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
                    max_leaves=10)
FIELDS = ["id", "problem", "answer", "gold", "response", "benchmark", "attempts", "tokens", "truncated", "sample",
          "text", "grade", "verdict", "agrees", "wrong", "solution", "verification", "completion", "spans", "level"]
ATTEMPT = st.fixed_dictionaries({}, optional={"answer": JSON, "grade": st.sampled_from(["correct", "incorrect", "x"]) | JSON,
                                              "verdict": st.sampled_from(["correct", "unparsable", None]) | JSON})
RECORD = st.fixed_dictionaries({}, optional={**{f: JSON for f in FIELDS}, "attempts": st.lists(ATTEMPT, max_size=2) | JSON,
                                             "tokens": st.integers(-1, 9) | JSON, "truncated": st.booleans() | JSON})
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def readers():
    from s2r.check import CheckConfig, _read_inputs
    from s2r.bi.verify import read_attempts
    from s2r.metrics import compute_metrics, load_trajectories
    from s2r.tasks import load_problems
    from s2r.train.sft import read_records

    return {
        "iter_jsonl": lambda p: list(iter_jsonl(p)),
        "check": lambda p: _read_inputs(CheckConfig(input=str(p), out="-")),
        "metrics": lambda p: compute_metrics(load_trajectories(p)),
        "problems": lambda p: load_problems(str(p)),
        "verify": read_attempts,
        "sft": read_records,
    }


def only_data_errors(path, lines: list[bytes]):
    path.write_bytes(b"\n".join(lines))
    for name, read in readers().items():
        try:
            read(path)
        except DataError as e:
            assert str(e).startswith(f"{path}"), (name, str(e))


@FUZZ
@given(lines=st.lists(st.binary(max_size=40), max_size=4))
def test_random_bytes_give_records_or_a_data_error(tmp_path, lines):
    only_data_errors(tmp_path / "fuzz.jsonl", lines)


@FUZZ
@given(records=st.lists(RECORD | JSON, min_size=1, max_size=3))
def test_random_records_give_records_or_a_data_error(tmp_path, records):
    only_data_errors(tmp_path / "fuzz.jsonl", [json.dumps(r).encode() for r in records])


# ----------------------------------------------------------------------------------- an endpoint that cuts its answer short


@pytest.fixture
def cutting_server():
    """A local OpenAI-style endpoint: an answer for most prompts, a truncated JSON body (or a body
    shorter than its Content-Length) for prompts that contain CUT (or SHORT)."""
    hits = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            hits.append(body)
            reply = json.dumps({"choices": [{"text": "So \\boxed{2}.", "finish_reason": "stop"}],
                                "usage": {"completion_tokens": 4, "prompt_tokens": 5}}).encode()
            length = len(reply)
            if "CUT" in body:
                reply = reply[:23]
                length = len(reply)
            elif "SHORT" in body:
                reply = reply[:23]  # the header still promises the whole body
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(length))
            self.end_headers()
            self.wfile.write(reply)
            self.close_connection = True

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", hits
    server.shutdown()
    server.server_close()


def test_truncated_body_is_retried_counted_and_reported(cutting_server):
    url, hits = cutting_server
    backend = HTTPBackend(url, model="m", retries=2, backoff=0.01)
    ok, cut, short = backend.complete(["fine", "CUT", "SHORT"], SamplingParams(max_tokens=8))
    backend.close()
    assert ok.text == "So \\boxed{2}." and ok.finish_reason == "stop"
    for c in (cut, short):
        assert c.finish_reason == "error" and c.error.startswith(f"{url}/completions: ")
    assert "malformed JSON body" in cut.error
    assert sum("CUT" in h for h in hits) == 3 and sum("SHORT" in h for h in hits) == 3  # 1 + 2 retries


def test_eval_keeps_going_past_a_truncated_body(tmp_path, capsys, cutting_server):
    url, _ = cutting_server
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"problem": p, "answer": "2"}) + "\n" for p in ("1+1", "CUT 1+1", "0+2")))
    line = one_line_error(capsys, ["eval", "--backend", "http", "--base-url", url, "--model", "m", "--retries", "1",
                                   "--strategy", "single", "--data", str(data), "--out", str(tmp_path / "run")],
                          "1 of 3 generations failed", f"{url}/completions", "malformed JSON body", after_work=True)
    kept = [r for _, r in iter_jsonl(tmp_path / "run" / "trajectories.jsonl.partial")]
    assert sorted(r["problem"] for r in kept) == ["0+2", "1+1"] and "kept in" in line


@pytest.mark.parametrize("command", ["check", "metrics", "build", "hard", "solve", "verify-cache", "verify-prompt"])
def test_a_folder_where_a_file_belongs(tmp_path, capsys, command):
    folder = tmp_path / "folder"
    folder.mkdir()
    traj = tmp_path / "t.jsonl"
    traj.write_text(json.dumps(trajectory()) + "\n")
    check = tmp_path / "c.jsonl"
    check.write_text('{"response": "\\\\boxed{2}", "gold": "2"}\n')
    verified = tmp_path / "v.jsonl"
    verified.write_text(json.dumps({**trajectory(), "grade": "correct", "agrees": True, "wrong": 0, "solution": "2",
                                    "verification": "ok"}) + "\n")
    argv = {
        "check": ["check", str(check), "--out", str(folder)],
        "metrics": ["metrics", str(traj), "--out", str(folder)],
        "build": ["build", str(verified), "--out", str(folder)],
        "hard": ["hard", str(traj), "--out", str(folder)],
        "solve": ["solve", "--data", "arith:val", "--limit", "1", "--model", "m", "--out", str(folder)],
        "verify-cache": ["verify", str(traj), "--out", str(tmp_path / "o.jsonl"), "--cache", str(folder)],
        "verify-prompt": ["verify", str(traj), "--out", str(tmp_path / "o.jsonl"), "--teacher", "http",
                          "--prompt-file", str(folder)],
    }[command]
    one_line_error(capsys, argv, str(folder))


def test_a_grade_of_the_wrong_type_is_a_data_error(tmp_path, capsys):
    """Found by the fuzzing above: a list where a grade or verdict belongs raised TypeError."""
    path = tmp_path / "t.jsonl"
    for attempt in ({"grade": ["correct"]}, {"grade": "correct", "verdict": {}}):
        path.write_text(json.dumps(trajectory(attempts=[attempt])) + "\n")
        one_line_error(capsys, ["metrics", str(path)], f"{path}:1:", "attempt 0")
