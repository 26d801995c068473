"""`s2r demo` wired end to end: on a deliberately under-trained base model (rows, files, resume,
the model cache) and, every stage cut to a few problems, from the shipped base model (BI, the RL
stages and the token-matched vote). The full run is the main job; its numbers are in the README."""

import json
import re
from pathlib import Path

from s2r.cli import main


def test_demo_rows_files_and_reuse(tmp_path, capsys):
    args = ["demo", "--out", str(tmp_path / "d"), "--seed", "3", "--cache", str(tmp_path / "cache"),
            "--base-max-steps", "20", "--test-problems", "15", "--batch-size", "16", "--bi-problems", "6"]
    assert main(args) == 0
    result = json.loads((tmp_path / "d" / "results.json").read_text())
    assert result["seed"] == 3 and result["test_problems"] == 15
    assert [r["name"] for r in result["rows"]] == ["base", "base-majority4", "base-intrinsic"]
    for row in result["rows"]:
        assert 0 <= row["metrics"]["eval/acc_final"] <= 1 and row["metrics"]["eval/tokens_mean"] > 0
    votes = [json.loads(line)["votes"] for line in (tmp_path / "d" / "rows" / "base-majority4.jsonl").open()]
    assert len(votes) == 15 and all(len(v) == 4 for v in votes)  # four sampled answers per vote
    assert result["rows"][2]["metrics"]["eval/attempts_mean"] == 2.0
    html = (tmp_path / "d" / "report.html").read_text()
    assert "base-majority4" in html and html.count("<svg") >= 4 and "No run verified its own answers" in html
    out, err = capsys.readouterr()
    assert "base-intrinsic" in out and "acc first" in out
    # a 20-step base model solves nothing: BI gets no data, says so, and its rows are left out
    assert "no BI data, so the bi and plain-sft rows are left out" in err
    # off a terminal: a line as each stage starts and ends, and each loop's first and last progress lines
    for line in ("demo: base model: started", "base model: 0/20 steps (0%)", "demo: evaluation of base-intrinsic: done in",
                 "bi-attempts: 30/30 trajectories (100%)", "verify (arith:"):
        assert line in err, line
    assert re.search(r"^base model: 20/20 steps \(100%\), [\d.]+ (step/s|s/step), loss [\d.]+$", err, re.M)
    assert len(list((tmp_path / "d" / "bi" / "attempts.jsonl").open())) == 6 * 5
    rows = (tmp_path / "d" / "rows" / "base.jsonl").read_text()
    assert main(args) == 0  # a second run reuses the cached model and every row
    assert "reusing the base model" in capsys.readouterr().err
    assert (tmp_path / "d" / "rows" / "base.jsonl").read_text() == rows


def test_quick_reuses_a_cached_full_base_model(tmp_path):
    from s2r.demo import DemoConfig, base_config

    full = base_config(DemoConfig(cache=str(tmp_path), seed=5))
    quick = DemoConfig(cache=str(tmp_path), seed=5, quick=True)
    assert base_config(quick).max_steps == 200 and base_config(quick).out != full.out
    out = tmp_path / full.out
    (out / "model").mkdir(parents=True)
    (out / "base.json").write_text(json.dumps({"key": full.key()}))
    assert base_config(quick) == full


def test_the_shipped_base_model_is_seed_0s_and_scores_what_its_record_says(tmp_path):
    from dataclasses import replace

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from s2r.demo import SHIPPED_BASE, DemoConfig, base_config
    from s2r.grader import Grader
    from s2r.tasks import arith
    from s2r.tasks.arith.base import BaseConfig, greedy_accuracy

    # it has the current recipe's key: changing the base recipe without re-training it fails here
    assert base_config(DemoConfig(cache=str(tmp_path))) == replace(BaseConfig(), out=str(SHIPPED_BASE))
    assert base_config(DemoConfig(cache=str(tmp_path), train_base=True)).out.startswith(str(tmp_path))
    assert base_config(DemoConfig(cache=str(tmp_path), seed=1)).out.startswith(str(tmp_path))
    record = json.loads((SHIPPED_BASE / "base.json").read_text())["history"][-1]
    model = AutoModelForCausalLM.from_pretrained(SHIPPED_BASE / "model")
    tokenizer = AutoTokenizer.from_pretrained(SHIPPED_BASE / "model")
    with Grader(workers=1) as grader:
        acc, _ = greedy_accuracy(model, tokenizer, list(arith.generate("val", 200, 0)), grader)
    assert abs(acc - record["val_acc"]) <= 0.01 and acc >= 0.5


def test_rows_of_another_model_are_not_reused(tmp_path, capsys):
    from s2r.demo import run_row
    from s2r.models.backend import SamplingParams
    from s2r.models.tiny import TinyModelConfig, run_tiny_model
    from s2r.loop import Settings
    from s2r.tasks import arith
    from s2r.tasks.arith.base import PLAIN

    a = run_tiny_model(TinyModelConfig(str(tmp_path / "a"), seed=0))
    b = run_tiny_model(TinyModelConfig(str(tmp_path / "b"), seed=1))
    jobs = [("arith", p, 0) for p in arith.generate("test", 3, seed=0)]
    s = Settings(max_tokens=6, params=SamplingParams(max_tokens=6, seed=0), prompt=PLAIN)
    source = tmp_path / "rows" / "r.jsonl.settings.json"
    first = run_row("r", "single", a, jobs, s, tmp_path, 4)
    was = source.read_text()
    assert run_row("r", "single", a, jobs, s, tmp_path, 4) == first  # same model: reused
    assert "other settings" not in capsys.readouterr().err
    run_row("r", "single", b, jobs, s, tmp_path, 4)
    assert "was written with other settings (model " in capsys.readouterr().err and source.read_text() != was


def test_greedy_rows_decode_wider_and_write_the_same_trajectories_at_any_width(tmp_path):
    from dataclasses import replace

    from s2r.demo import SHIPPED_BASE, DemoConfig, run_row
    from s2r.loop import Settings
    from s2r.models.backend import SamplingParams
    from s2r.tasks import arith
    from s2r.tasks.arith.base import PLAIN

    greedy = Settings(max_tokens=40, params=SamplingParams(max_tokens=40, seed=0), prompt=PLAIN)
    sampled = replace(greedy, params=replace(greedy.params, temperature=0.7))
    cfg = DemoConfig(batch_size=7, greedy_batch_size=40)
    assert cfg.width(greedy) == 40 and cfg.width(sampled) == 7  # a sampled row's draw depends on the width
    jobs = [("arith", p, 0) for p in arith.generate("test", 40, seed=0)]
    rows = [run_row(f"w{w}", "intrinsic", SHIPPED_BASE / "model", jobs, greedy, tmp_path, w) for w in (7, 40)]
    strip = [[{k: v for k, v in r.items() if k != "seconds"} for r in row] for row in rows]
    assert strip[0] == strip[1] and len({r["text"] for r in rows[0]}) > 10


def test_a_row_fingerprint_covers_the_code_that_writes_trajectories(monkeypatch):
    import s2r.demo as demo

    package = Path(demo.__file__).parent
    assert all((package / name).exists() for name in demo.ROW_CODE)  # a renamed module must not drop out
    was = demo.code_digest()
    monkeypatch.setattr(demo, "ROW_CODE", tuple(n for n in demo.ROW_CODE if n != "loop.py"))
    assert demo.code_digest() != was  # the loop's code is part of it


def test_every_stage_runs_from_the_shipped_base_model_and_the_vote_is_token_matched(tmp_path):
    from s2r.demo import CALIBRATION

    out = tmp_path / "d"
    args = ["demo", "--out", str(out), "--cache", str(tmp_path / "cache"), "--test-problems", "6", "--bi-problems", "8",
            "--rl-iterations", "1", "--rl-prompts", "2", "--offline-problems", "4", "--max-tokens", "300"]
    assert main(args) == 0
    result = json.loads((out / "results.json").read_text())
    names = [r["name"] for r in result["rows"]]
    assert names[:7] == ["base", "base-majority4", "base-intrinsic", "plain-sft", "bi", "orl", "prl"]
    assert all((out / "rl" / n / "model" / "model.safetensors").exists() for n in ("orl", "prl"))
    rows = {r["name"]: r["metrics"] for r in result["rows"]}
    # the vote's k: prl's tokens per problem over those of a sampled single answer of the calibration
    calibration = [json.loads(line) for line in (out / "rows" / "prl-single-sampled.jsonl").open()]
    assert len(calibration) == 6 * CALIBRATION[1] and {r["strategy"] for r in calibration} == {"single"}
    k = max(2, round(rows["prl"]["eval/tokens_mean"] / (sum(r["tokens"] for r in calibration) / len(calibration))))
    assert names[-1] == f"prl-majority{k}"
    votes = [json.loads(line)["votes"] for line in (out / "rows" / f"prl-majority{k}.jsonl").open()]
    assert len(votes) == 6 and all(len(v) == k for v in votes)
