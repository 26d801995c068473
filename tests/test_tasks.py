"""The Task interface (a user's task from a file), the one data loader, the settings guard on resume,
and model folders that carry their prompt (s2r.json)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import s2r as s2r_package
from s2r.cli import main
from s2r.grader import grader_failed
from s2r.jsonl import read_jsonl, write_jsonl_atomic
from s2r.tasks import Task, load_problems, load_task
from s2r.tasks.task import own_grade

SHIPPED = Path(__file__).parents[1] / "src" / "s2r" / "assets" / "base-seed0" / "model"

USER_TASK = '''
from s2r.tasks import Task

class Reverse(Task):
    name = "reverse"

    def problems(self, split):
        words = {"test": ["abc", "hello", "boom"], "train": ["xy"]}[split]
        return [{"id": w, "problem": f"Reverse {w}.", "gold": w[::-1]} for w in words]

    def extract(self, text):
        return text[:3]

    def grade(self, answer, gold):
        if gold == "moob":
            raise RuntimeError("this grader fails on boom")
        return "correct" if answer == gold else "incorrect"
'''


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "model"
    assert main(["tiny-model", str(path)]) == 0
    return path


def s2r(*args: str) -> subprocess.CompletedProcess:
    """The s2r command in a fresh process, run from outside the package."""
    src = str(Path(s2r_package.__file__).parents[1])  # this checkout's s2r, whatever the working folder
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "s2r.cli", *args], capture_output=True, text=True, cwd="/", env=env,
                          timeout=600)


def test_a_task_from_a_file_runs_eval_and_sample_with_its_own_extract_and_grade(tmp_path, tiny):
    (tmp_path / "mytask.py").write_text(USER_TASK)
    spec = f"{tmp_path / 'mytask.py'}:Reverse"
    common = ["--task", spec, "--model", str(tiny), "--max-tokens", "6", "--template", "plain"]
    run = s2r("eval", *common, "--out", str(tmp_path / "ev"), "--strategy", "single")
    assert run.returncode == 0, run.stderr
    records = list(read_jsonl(tmp_path / "ev" / "trajectories.jsonl"))
    assert [(r["benchmark"], r["id"]) for r in records] == [("reverse:test", w) for w in ("abc", "hello", "boom")]
    task = load_task(spec)
    for r in records:
        a = r["attempts"][0]
        assert a["answer"] == task.extract(r["text"])  # the task's extract read the answer
        if r["id"] == "boom":  # its grade raised: a grader failure, counted, not a wrong answer
            assert a["grade"] == "unverifiable" and grader_failed(a["reason"]) and "RuntimeError" in a["reason"]
        elif a["answer"] is not None:
            assert a["grade"] == ("correct" if a["answer"] == r["gold"] else "incorrect")
    assert "reverse:test" in json.loads((tmp_path / "ev" / "metrics.json").read_text())["benchmarks"]
    run = s2r("sample", *common, "--data", "train", "--samples", "2", "--out", str(tmp_path / "s.jsonl"))
    assert run.returncode == 0, run.stderr
    assert [(r["benchmark"], r["sample"]) for r in read_jsonl(tmp_path / "s.jsonl")] == [("reverse:train", 0), ("reverse:train", 1)]
    assert "warning: none of the 2 attempts is correct" in run.stderr  # a stage with nothing right says so


def test_task_grading_defaults_and_failures(grader):
    assert [g.verdict for g in Task().grade_many([("1/2", "0.5"), ("3", "4"), (None, "1")], grader)] == [
        "correct", "incorrect", "unverifiable"]

    class Odd(Task):
        def grade(self, answer, gold):
            return {"a": "correct", "b": "maybe"}[answer]

    grades = [own_grade(Odd(), a, "g") for a in ("a", "b", "c", None)]
    assert [g.verdict for g in grades] == ["correct", "unverifiable", "unverifiable", "unverifiable"]
    assert [grader_failed(g.reason) for g in grades] == [False, True, True, False]  # no answer is the answer's fault


def test_load_task_specs_and_their_errors(tmp_path):
    assert load_task("s2r.tasks.arith:ArithTask").name == "arith"
    (tmp_path / "t.py").write_text("class NotATask: pass\n")
    for spec, message in ((f"{tmp_path / 't.py'}:NotATask", "not a subclass"), ("nocolon", "FILE.py:CLASS"),
                          (f"{tmp_path / 'none.py'}:X", "no file"), ("no_such_module_x:X", "cannot import")):
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            load_task(spec)


def test_files_s2r_writes_load_back_without_options(tmp_path, capsys):
    assert main(["data", "arith:test", "--limit", "3", "--out", str(tmp_path / "p.jsonl")]) == 0
    written = load_problems("arith:test", limit=3)
    assert load_problems(str(tmp_path / "p.jsonl")) == written  # field gold, ids, levels, subjects kept
    # a trajectories file: several samples of each problem are one problem
    write_jsonl_atomic(tmp_path / "t.jsonl", [{**p.as_dict(), "benchmark": "arith", "sample": k, "attempts": []}
                                              for p in written for k in range(2)])
    assert load_problems(str(tmp_path / "t.jsonl")) == written
    # every command that takes --data takes the field options
    (tmp_path / "q.jsonl").write_text(json.dumps({"q": "Compute 6 / 3.", "sol": "2", "key": "k"}) + "\n")
    assert main(["data", str(tmp_path / "q.jsonl"), "--problem-field", "q", "--gold-field", "sol", "--id-field", "key"]) == 0
    assert json.loads(capsys.readouterr().out) == {"id": "k", "problem": "Compute 6 / 3.", "gold": "2"}
    assert main(["solve", "--data", str(tmp_path / "q.jsonl"), "--problem-field", "q", "--gold-field", "sol",
                 "--limit", "0", "--model", "unused", "--out", str(tmp_path / "o.jsonl")]) == 0


def test_a_rerun_with_other_settings_stops_and_the_same_settings_resume(tmp_path, tiny, capsys):
    args = ["solve", "--model", str(tiny), "--data", "arith:test", "--limit", "2", "--max-tokens", "4",
            "--strategy", "single", "--out", str(tmp_path / "t.jsonl")]
    assert main(args) == 0
    before = (tmp_path / "t.jsonl").read_text()
    capsys.readouterr()
    assert main([*args, "--temperature", "0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "temperature 0.0 → 0.5" in err and "choose another --out" in err
    assert (tmp_path / "t.jsonl").read_text() == before  # nothing lost
    assert main(args) == 0
    assert "2 of 2 trajectories already written" in capsys.readouterr().err
    assert json.loads((tmp_path / "t.jsonl.settings.json").read_text())["temperature"] == 0.0


def test_the_shipped_base_model_samples_right_with_default_flags(tmp_path, capsys):
    assert json.loads((SHIPPED / "s2r.json").read_text()) == {"system": "", "template": "plain"}
    out = tmp_path / "a.jsonl"
    assert main(["sample", "--model", str(SHIPPED), "--data", "arith:train", "--limit", "8", "--samples", "2",
                 "--max-tokens", "40", "--out", str(out)]) == 0
    records = list(read_jsonl(out))
    assert len(records) == 16 and sum(r["attempts"][0]["grade"] == "correct" for r in records) >= 4  # 0 before
    assert json.loads((tmp_path / "a.jsonl.settings.json").read_text())["template"] == "plain"


def test_trained_models_record_their_prompt_and_flags_still_win(tmp_path, tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from s2r.solve import SolveConfig, settings_of
    from s2r.train.common import Distributed, save_model
    from s2r.train.sft import SFTConfig

    cfg = SFTConfig("d.jsonl", model=str(tiny), system="", template="plain").from_model(str(tiny))
    save_model(AutoModelForCausalLM.from_pretrained(tiny), AutoTokenizer.from_pretrained(tiny), cfg, tmp_path,
               Distributed("cpu"))
    trained = tmp_path / "model"
    assert json.loads((trained / "s2r.json").read_text()) == {"system": "", "template": "plain"}
    assert settings_of(SolveConfig(out="o", model=str(trained))).prompt.template == "plain"
    assert settings_of(SolveConfig(out="o", model=str(trained), template="auto", system="S")).prompt.system == "S"
    assert settings_of(SolveConfig(out="o", model=str(tiny))).prompt.template == "auto"  # no s2r.json: the defaults


def test_build_with_no_record_is_an_error(tmp_path, capsys):
    row = {"benchmark": "arith", "id": "1", "problem": "Compute 6 / 3.", "gold": "2", "answer": "3", "grade": "incorrect",
           "solution": "\\boxed{3}", "verification": "Therefore, the answer is incorrect.", "verdict": "incorrect",
           "agrees": True, "count": 1, "samples": 1, "wrong": 1}
    write_jsonl_atomic(tmp_path / "v.jsonl", [row])
    assert main(["build", str(tmp_path / "v.jsonl"), "--out", str(tmp_path / "b.jsonl")]) == 2
    assert "no SFT records" in capsys.readouterr().err and not (tmp_path / "b.jsonl").exists()


def test_the_task_teacher_is_the_task_s_own(tmp_path):
    from s2r.bi.verify import TaskTeacher
    from s2r.tasks import arith

    item = {"benchmark": "arith:train", "problem": "Compute 91 / 7.", "answer": "12"}
    assert TaskTeacher(None).verify([item]) == [(arith.confirmative_check("Compute 91 / 7.", "12"), None)]
    (tmp_path / "mytask.py").write_text(USER_TASK)
    with pytest.raises(ValueError, match="has no teacher"):
        TaskTeacher(f"{tmp_path / 'mytask.py'}:Reverse").verify([item])
    with pytest.raises(ValueError, match="names no task"):
        TaskTeacher(None).verify([{**item, "benchmark": "mine"}])
