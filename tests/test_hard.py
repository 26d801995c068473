"""`s2r hard`: which problems a model finds hard, from hand-made trajectories."""

import json

import pytest

from s2r.cli import main
from s2r.hard import hard_problems
from s2r.tasks import load_problems


def att(grade, reason="match"):
    return {"answer": "1", "grade": grade, "verdict": None, "reason": reason}


def traj(id, grades, sample=0, reason="mismatch"):
    attempts = [att(g, "match" if g == "correct" else reason) for g in grades]
    return {"benchmark": "arith", "id": id, "problem": f"Compute {id}.", "gold": f"g{id}", "level": 2,
            "subject": "division", "sample": sample, "attempts": attempts, "tokens": 10, "truncated": False}


RECORDS = [
    traj("1", ["correct"]),  # easy
    traj("2", ["incorrect", "correct"]),  # easy: right at the second attempt
    traj("3", ["incorrect", "incorrect", "correct"]),  # hard: right only at the third attempt
    traj("4", ["incorrect"] * 4),  # hard: wrong
    traj("5", ["unverifiable"], reason="no answer found"),  # hard: the model gave no answer
    traj("6", ["unverifiable"], reason="timeout after 2s"),  # ungraded: the grader's failure
    traj("7", ["correct"], sample=0), traj("7", ["incorrect"], sample=1),  # hard: one of its samples is wrong
]


def test_hard_problems_by_hand():
    hard, counts = hard_problems(RECORDS, min_attempts=3)
    assert [p["id"] for p in hard] == ["3", "4", "5", "7"]
    assert dict(counts) == {"easy": 2, "hard": 4, "ungraded": 1}
    assert hard[0] == {"id": "3", "problem": "Compute 3.", "gold": "g3", "level": 2, "subject": "division"}
    # min_attempts 0: only the problems not ended right
    assert [p["id"] for p in hard_problems(RECORDS, min_attempts=0)[0]] == ["4", "5", "7"]
    # min_attempts 2: the second-attempt fix is hard too
    assert [p["id"] for p in hard_problems(RECORDS, min_attempts=2)[0]] == ["2", "3", "4", "5", "7"]


def test_hard_cli_writes_a_problem_file_that_rl_reads(tmp_path, capsys):
    src = tmp_path / "traj.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    out = tmp_path / "hard.jsonl"
    assert main(["hard", str(src), "--out", str(out)]) == 0
    assert "8 problems" not in capsys.readouterr().err  # counted per problem, not per trajectory
    problems = load_problems(str(out))  # how `s2r rl --data hard.jsonl` reads it
    assert [(p.problem, p.gold) for p in problems] == [(f"Compute {i}.", f"g{i}") for i in "3457"]


def test_hard_cli_reports_counts_and_rejects_records_without_a_problem(tmp_path, capsys):
    src = tmp_path / "traj.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    main(["hard", str(src), "--out", str(tmp_path / "h.jsonl")])
    err = capsys.readouterr().err
    assert "7 problems: 4 hard" in err and "2 easy" in err and "1 left out: the grader failed" in err
    bare = dict(traj("9", ["incorrect"]))
    del bare["problem"]
    src.write_text(json.dumps(bare) + "\n")
    assert main(["hard", str(src), "--out", str(tmp_path / "h2.jsonl")]) == 2
    assert "no 'problem' or 'gold' field" in capsys.readouterr().err
    assert not (tmp_path / "h2.jsonl").exists()


@pytest.mark.parametrize("bad", ["{not json\n", json.dumps({"id": "1"}) + "\n"])
def test_hard_cli_names_file_and_line_of_malformed_input(tmp_path, capsys, bad):
    src = tmp_path / "traj.jsonl"
    src.write_text(json.dumps(RECORDS[0]) + "\n" + bad)
    assert main(["hard", str(src), "--out", str(tmp_path / "h.jsonl")]) == 2
    assert f"{src}:2" in capsys.readouterr().err
