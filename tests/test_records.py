"""records.py: one typed record per contract. Round trips by hand and on files the pipeline writes;
the loop fills each trajectory's actions once, and a record without them gets the same ones."""

import json

import pytest
from fakes import ScriptedBackend

from s2r.cli import main
from s2r.format import DEFAULT_FORMAT as F
from s2r.format import parse
from s2r.grader import Grader
from s2r.loop import Settings, solve_problems
from s2r.prompts import PromptConfig
from s2r.records import Action, SFTRecord, Trajectory, graded_steps
from s2r.tasks import Problem

V = "\n\nWait, let me recheck my solution.\n"
R = "\n\nLet me try again.\n"
OK = "\nTherefore, the answer is correct."
BAD = "\nTherefore, the answer is incorrect."
PLAIN = Settings(max_tokens=400, votes=3, prompt=PromptConfig(system="", template="plain"))
S2R_TEXT = r"\boxed{4}" + V + "4 is too small." + BAD + R + r"\boxed{5}" + V + "yes." + OK


@pytest.fixture(scope="module")
def grader():
    with Grader(timeout=5, workers=1) as g:
        yield g


def solve(scripts, strategy, grader):
    jobs = [("t", Problem(id=str(i), problem=p, gold="5", level=2), 0) for i, p in enumerate(scripts)]
    records, errors = solve_problems(ScriptedBackend(scripts), jobs, strategy, PLAIN, grader)
    assert not errors
    return records


def test_action_and_trajectory_round_trip_by_hand():
    solve_, verify = Action("solve", 0, 9, 0, "4", "incorrect"), Action("verify", 9, 60, 44, verdict="incorrect")
    assert solve_.dump() == {"kind": "solve", "start": 0, "end": 9, "body": 0, "answer": "4", "grade": "incorrect"}
    assert verify.dump() == {"kind": "verify", "start": 9, "end": 60, "body": 44, "verdict": "incorrect"}
    for a in (solve_, verify):
        assert Action.load(a.dump()) == a
    t = Trajectory(id="1", attempts=[{"answer": "4", "grade": "incorrect", "verdict": "incorrect", "reason": "mismatch"}],
                   tokens=12, truncated=False, benchmark="b", problem="p", gold="5", sample=0, strategy="s2r",
                   text=S2R_TEXT, prompt="Question: p\nAnswer:\n", actions=[solve_, verify], certainty=0.0,
                   extra={"rewards": [-1.0, 1.0]})
    assert Trajectory.load(t.dump()) == t
    assert list(t.dump())[:3] == ["benchmark", "id", "problem"] and list(t.dump())[-1] == "rewards"


def test_the_loop_fills_actions_once_graded_as_their_attempts(grader):
    (r,) = solve({"p": [S2R_TEXT]}, "s2r", grader)
    t = Trajectory.load(r)
    assert t.dump() == r  # what the loop wrote loads and dumps back unchanged
    assert [(a.start, a.end) for a in t.actions] == parse(r["text"]).spans  # the spans format.parse gives
    assert [(a.kind, a.answer, a.grade, a.verdict) for a in t.actions] == [
        ("solve", "4", "incorrect", None), ("verify", None, None, "incorrect"),
        ("solve", "5", "correct", None), ("verify", None, None, "correct")]
    assert [t.content(a) for a in t.actions] == [a.text for a in parse(r["text"]).actions]
    assert r["prompt"] == "Question: p\nAnswer:\n" and r["text"].startswith(r"\boxed{4}")
    steps = graded_steps(t)[1]
    assert [(s.kind, s.correct, s.verdict) for s in steps] == [
        ("solve", False, None), ("verify", None, "incorrect"), ("solve", True, None), ("verify", None, "correct")]


@pytest.mark.parametrize("strategy", ["s2r", "single", "majority", "intrinsic"])
def test_a_record_without_actions_gets_the_loop_s_actions(strategy, grader):
    scripts = {"p": [S2R_TEXT, r"\boxed{5}", r"\boxed{5}", "On review: \\boxed{5}"],
               "q": [R.lstrip("\n") + r"\boxed{3}" + V + "no" + BAD, "hm", "x \\boxed{5}", "\\boxed{5}"]}
    for r in solve(scripts, strategy, grader):
        old = {k: v for k, v in r.items() if k not in ("actions", "prompt")}  # as s2r wrote it before records.py
        t = Trajectory.load(old)
        assert [a.dump() for a in t.actions] == r["actions"], strategy
        assert t.dump() == old | {"actions": r["actions"]}  # nothing of the old record changes


def test_graded_steps_pair_each_solve_with_its_own_grade(grader):
    """The steps RL trains on, read off the record, equal those of parsing the text and pairing the
    i-th solve with the i-th attempt's grade (what rl did before the records)."""
    from s2r.format import SOLVE, parse
    from s2r.train.advantages import Step

    records = solve({"p": [S2R_TEXT], "q": [r"\boxed{5}" + V + "no" + BAD + R + r"\boxed{7}" + V + "no" + BAD, r"\boxed{6}"]},
                    "s2r", grader)
    for r in records:
        actions = parse(r["text"], F).actions
        grades = iter(a["grade"] == "correct" for a in r["attempts"])
        steps = [Step(a.kind, correct=next(grades)) if a.kind == SOLVE else Step(a.kind, verdict=a.verdict) for a in actions]
        mine, my_steps = graded_steps(Trajectory.load(r))
        assert my_steps == steps and [(a.kind, a.start, a.end) for a in mine] == [(a.kind, a.start, a.end) for a in actions]
    assert any(s.kind == "verify" for s in my_steps) and any(s.correct is False for s in my_steps if s.kind == "solve")
    failed = dict(records[0], attempts=[dict(records[0]["attempts"][0], reason="timeout after 2s")])
    assert graded_steps(Trajectory.load(failed)) is None


@pytest.mark.parametrize("record", [
    {"problem": "p", "completion": "c", "spans": [[0, 1]]},
    {"benchmark": "b", "id": "1", "gold": "5", "level": None, "subject": None, "kind": "cct", "cct": "critique",
     "problem": "p", "messages": [{"role": "user", "content": "p"}], "completion": "c", "spans": [[0, 1]]},
    {"problem": "p", "prefix": "[Correct rationale]\n", "completion": "c", "spans": [[0, 1]], "kind": "mistake-tuning"},
])
def test_sft_record_round_trip(record):
    r = SFTRecord.load(record)
    assert r.dump() == record and SFTRecord.load(r.dump()) == r


def test_files_the_pipeline_writes_round_trip(tmp_path):
    """`s2r sample` (a tiny base model on arith), `s2r verify`, `s2r build` (every kind): each record
    loads and dumps back unchanged; the gold answer is `gold` everywhere."""
    from s2r.train.sft import read_records

    base = str(__import__("pathlib").Path(__file__).parents[1] / "src/s2r/assets/base-seed0/model")
    att, ver = tmp_path / "att.jsonl", tmp_path / "ver.jsonl"
    assert main(["sample", "--model", base, "--data", "arith:train", "--limit", "4", "--samples", "3", "--device", "cpu",
                 "--out", str(att)]) == 0
    sampled = [json.loads(line) for line in att.read_text().splitlines()]
    for r in sampled:
        assert Trajectory.load(r).dump() == r and "gold" in r and r["actions"][0]["grade"] == r["attempts"][0]["grade"]
    assert main(["verify", str(att), "--out", str(ver), "--cache", str(tmp_path / "cache.jsonl")]) == 0
    assert all("gold" in json.loads(line) for line in ver.read_text().splitlines())
    for kind, source in (("s2r", ver), ("plain", ver), ("cct", att), ("mistake-tuning", att), ("r-tuning", att)):
        out = tmp_path / f"{kind}.jsonl"
        if main(["build", str(source), "--out", str(out), "--kind", kind]) != 0:
            assert kind in ("s2r", "plain", "cct")  # a tiny sample may give no record of some kinds
            continue
        for _, r in read_records(str(out)):  # what `s2r sft` reads
            assert SFTRecord.load(r).dump() == r and "gold" in r and "answer" not in r
    hard = tmp_path / "hard.jsonl"
    assert main(["hard", str(att), "--out", str(hard), "--min-attempts", "1"]) == 0
    assert all("gold" in json.loads(line) for line in hard.read_text().splitlines())


def test_malformed_actions_are_one_line_naming_file_and_line(tmp_path, capsys):
    good = {"benchmark": "b", "id": "1", "problem": "p", "gold": "5", "strategy": "single", "text": "\\boxed{5}",
            "attempts": [{"answer": "5", "grade": "correct", "verdict": None, "reason": "match"}], "tokens": 3,
            "truncated": False}
    src = tmp_path / "t.jsonl"
    src.write_text(json.dumps(good) + "\n" + json.dumps(dict(good, actions=[{"kind": "solve", "start": "0"}])) + "\n")
    for command in (["metrics", str(src)], ["verify", str(src), "--out", str(tmp_path / "v.jsonl")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert f"{src}:2" in err and "action 0" in err and len(err.strip().splitlines()) == 1
