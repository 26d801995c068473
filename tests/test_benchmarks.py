"""Benchmark loaders on the real files in ../shared/data, and their gold conventions vs the grader."""

import json

import pytest

from s2r.jsonl import DataError, read_jsonl
from s2r.tasks import BENCHMARKS, ProblemFields, load_problems

# name -> (count, first problem's gold, level, subject), read off the files by hand
EXPECTED = {
    "gsm8k": (1319, "18", None, None),
    "math500": (500, r"\left( 3, \frac{\pi}{2} \right)", 2, "Precalculus"),
    "math": (5000, "2", 3, "Algebra"),
    "aime24": (30, "204", None, None),
    "aime25": (30, "468", None, None),
    "amc23": (40, "27", None, None),
    "olympiadbench": (675, "2", None, "Combinatorics"),
    "college_math": (2818, "10-4 n", None, "college_math.algebra"),
    "gaokao2023en": (383, r"\{x|-2\leq x < 1\}", None, None),  # 385 lines, 2 with an empty answer
    "minerva_math": (272, "1.6", None, "Introduction to Astronomy (8.282J Spring 2006)"),
    "svamp": (1000, "145", None, "Common-Division"),
    "asdiv": (2215, "9", None, "Addition"),
    "mawps": (2065, "43", None, "singleeq"),
}


def test_every_benchmark_has_expectations():
    assert set(EXPECTED) == set(BENCHMARKS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_loader_reads_real_file(name, data_dir):
    count, gold, level, subject = EXPECTED[name]
    problems = load_problems(name, data_dir=data_dir)
    assert len(problems) == count
    first = problems[0]
    assert (first.gold, first.level, first.subject) == (gold, level, subject)
    assert len({p.id for p in problems}) == count
    assert all(p.problem.strip() and p.gold for p in problems)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_gold_convention_agrees_with_grader(name, data_dir, grader):
    """A response that boxes the gold is correct; one that boxes another problem's gold is correct
    only when both golds are the same value."""
    problems = load_problems(name, data_dir=data_dir)[:60]
    own = grader.grade_many([(rf"So the answer is \boxed{{{p.gold}}}.", p.gold) for p in problems])
    assert all(g.correct for g in own), [(p.gold, g) for p, g in zip(problems, own) if not g.correct]
    other = grader.grade_many([(rf"\boxed{{{problems[i - 1].gold}}}", p.gold) for i, p in enumerate(problems)])
    wrong = [(p.gold, problems[i - 1].gold) for i, (p, g) in enumerate(zip(problems, other)) if g.correct]
    assert len(wrong) < len(problems) // 4, wrong  # a few neighbours genuinely share answers


def test_gsm8k_raw_solutions_match_gold(data_dir, grader):
    """gsm8k: the '####' line of the reference solution (commas and all) grades correct."""
    raw = list(read_jsonl(data_dir / "gsm8k" / "test.jsonl"))
    problems = load_problems("gsm8k", data_dir=data_dir)
    with_commas = [i for i, r in enumerate(raw) if "," in r["answer"].split("####")[-1]]
    assert with_commas, "the test set has answers written with thousands separators"
    assert all("," not in problems[i].gold for i in with_commas)
    grades = grader.grade_many([(r["answer"], p.gold) for r, p in zip(raw, problems)])
    assert all(g.correct for g in grades)


def test_conventions_of_numeric_sources(data_dir, grader):
    aime = {p.id: p.gold for p in load_problems("aime24", data_dir=data_dir)}
    assert "025" in aime.values()  # leading zeros kept; the grader compares as integers
    assert grader.grade(r"\boxed{25}", "025").correct
    aime25 = load_problems("aime25", data_dir=data_dir)
    assert all("circ" not in p.gold for p in aime25)
    asdiv = {p.gold for p in load_problems("asdiv", data_dir=data_dir)}
    assert "Mrs. Hilt" in asdiv and not any(g.endswith(")") and " (" in g for g in asdiv)


def test_splits_and_limits(data_dir):
    assert len(load_problems("gsm8k:train", data_dir=data_dir)) == 7473
    assert len(load_problems("math500", data_dir=data_dir, limit=7)) == 7
    assert len(load_problems("mawps:addsub", data_dir=data_dir)) == 395
    with pytest.raises(ValueError, match="no split"):
        load_problems("math500:train", data_dir=data_dir)
    with pytest.raises(ValueError, match="unknown benchmark"):
        load_problems("nope")


def test_user_jsonl_with_configured_fields(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [
        {"q": "1+1?", "sol": r"We add: \boxed{2}", "key": "a", "lvl": "Level 2", "topic": "add"},
        {"q": "2+2?", "sol": 4.0, "key": "b"},
        {"q": "Big?", "sol": "$1,000$", "key": "c"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    fields = ProblemFields(problem="q", gold="sol", id="key", level="lvl", subject="topic")
    problems = load_problems(str(path), fields=fields)
    assert [(p.id, p.gold, p.level, p.subject) for p in problems] == [
        ("a", "2", 2, "add"), ("b", "4", None, None), ("c", "1000", None, None)]


def test_malformed_user_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"problem": "p", "answer": "1"}\n\n{"problem": "q", "answer": \n')
    with pytest.raises(DataError, match=rf"{path}:3: malformed JSON"):
        load_problems(str(path))
    path.write_text('{"problem": "p", "answer": "1"}\n{"problem": "q"}\n')
    with pytest.raises(DataError, match=rf"{path}:2: cannot read problem: missing field 'answer'"):
        load_problems(str(path))
    path.write_text('{"problem": "p", "answer": "1", "i": 1}\n{"problem": "q", "answer": "2", "i": 1}\n')
    with pytest.raises(DataError, match=rf"{path}:2: duplicate id"):
        load_problems(str(path), fields=ProblemFields(id="i"))
