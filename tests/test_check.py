"""`s2r check`: every record gets a verdict, hostile ones are unverifiable, a killed run resumes."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

from s2r.cli import main
from s2r.jsonl import read_jsonl
from s2r.tasks import load_problems


def hostile(j):  # twenty different expressions, so no answer is served from the grader's cache
    kind = j % 3
    if kind == 0:
        return r"\boxed{9^{9^{9^{" + str(9 + j) + "}}}}"
    if kind == 1:
        return r"\boxed{(" + str(10 ** (8 + j % 4) + j) + ")!}"
    return r"\boxed{" + "+".join([f"x{j}"] * 12_000) + "}"


def make_input(path, data_dir, n=1000, n_hostile=20):
    problems = load_problems("math500", data_dir=data_dir)
    raw = {r["unique_id"]: r for r in read_jsonl(data_dir / "math500" / "test.jsonl")}
    records = []
    for i in range(n - n_hostile):
        p = problems[i % len(problems)]
        response = raw[p.id]["solution"] if i % 3 else rf"I think it is \boxed{{{p.gold}+1}}."
        records.append({"id": i, "response": response, "gold": p.gold})
    for j in range(n_hostile):
        records.insert(j * (n // n_hostile), {"id": f"h{j}", "response": "So " + hostile(j), "gold": "5"})
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def test_thousand_records_with_hostile_ones(tmp_path, data_dir, capsys):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    records = make_input(src, data_dir)
    assert main(["check", str(src), "--out", str(out)]) == 0
    graded = list(read_jsonl(out))
    assert [r["id"] for r in graded] == [r["id"] for r in records]
    assert all(r["verdict"] in {"correct", "incorrect", "unverifiable"} for r in graded)
    by_id = {r["id"]: r for r in graded}
    assert all(by_id[f"h{j}"]["verdict"] == "unverifiable" for j in range(20))
    ordinary = Counter(r["verdict"] for r in graded if not str(r["id"]).startswith("h"))
    assert ordinary["unverifiable"] <= 5 and ordinary["correct"] > 600 and ordinary["incorrect"] > 300
    assert "1000 records: correct" in capsys.readouterr().err  # the summary, not the progress lines


def test_killed_run_resumes_without_losing_or_duplicating(tmp_path, data_dir):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    records = make_input(src, data_dir, n=400, n_hostile=20)
    cmd = [sys.executable, "-m", "s2r.cli", "check", str(src), "--out", str(out), "--chunk", "20", "--timeout", "1"]
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, start_new_session=True)
    partial = tmp_path / "out.jsonl.partial"
    while proc.poll() is None and (not partial.exists() or partial.read_text().count("\n") < 60):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole group: the CLI and its grading workers
    proc.wait()
    assert not out.exists()  # nothing landed half-written
    written = partial.read_text().count("\n")
    assert 60 <= written < 400
    resumed = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert f"resuming: {written} of 400" in resumed.stderr
    graded = list(read_jsonl(out))
    assert [r["id"] for r in graded] == [r["id"] for r in records]
    assert not partial.exists()
    again = subprocess.run(cmd, capture_output=True, text=True, check=True)  # complete: nothing to redo
    assert "resuming: 400 of 400" in again.stderr and list(read_jsonl(out)) == graded


def test_output_of_another_input_is_refused(tmp_path, capsys):
    a, b, out = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "out.jsonl"
    a.write_text(json.dumps({"response": r"\boxed{1}", "gold": "1"}) + "\n")
    b.write_text(json.dumps({"response": r"\boxed{2}", "gold": "1"}) + "\n")
    assert main(["check", str(a), "--out", str(out)]) == 0
    assert main(["check", str(b), "--out", str(out)]) == 2
    assert "written for another input" in capsys.readouterr().err


def test_custom_fields_trajectories_and_bad_lines(tmp_path, capsys):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    traj = r"\boxed{3}" + "\n\nWait, let me recheck my solution.\nNo: \\boxed{4}.\nTherefore, the answer is incorrect.\n\nLet me try again.\n\\boxed{4}"
    src.write_text(json.dumps({"text": traj, "answer": 4}) + "\n")
    assert main(["check", str(src), "--out", str(out), "--response-field", "text", "--gold-field", "answer"]) == 0
    (r,) = list(read_jsonl(out))
    assert (r["verdict"], r["pred"]) == ("correct", "4")  # the final attempt's answer, not the verifier's
    src.write_text(json.dumps({"text": "x", "answer": 1}) + "\n" + '{"text": "y", "answer"\n')
    assert main(["check", str(src), "--out", str(tmp_path / "o2.jsonl"), "--response-field", "text", "--gold-field", "answer"]) == 2
    assert f"{src}:2: malformed JSON" in capsys.readouterr().err
    src.write_text(json.dumps({"response": "x"}) + "\n")
    assert main(["check", str(src), "--out", str(tmp_path / "o3.jsonl")]) == 2
    assert f"{src}:1: field 'gold' is missing" in capsys.readouterr().err
