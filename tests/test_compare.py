"""`s2r compare` wired end to end from the shipped base model, every stage cut to a few problems: every
row, the files, the summary and the report, and a rerun that reuses what is done. Its numbers at full
size are in docs/results/; the statistics and the report are tested in test_compare_report.py."""

import json
import re

import pytest

from s2r.cli import main
from s2r.compare import ROWS

pytestmark = pytest.mark.slow


def test_compare_writes_every_row_for_one_seed_and_reuses_it(tmp_path, capsys):
    out = tmp_path / "c"
    args = ["compare", "--out", str(out), "--seed", "0", "--test-problems", "12", "--bi-problems", "24",
            "--rl-iterations", "2", "--rl-prompts", "4", "--trajectory-samples", "2", "--batch-size", "64",
            "--max-tokens", "300"]
    assert main(args) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["seeds"] == [0] and result["test_problems"] == 12
    assert [r["name"] for r in result["rows"]["0"]] == list(ROWS)
    for row in result["rows"]["0"]:
        m = row["metrics"]
        assert 0 <= m["eval/acc_final"] <= 1 and m["eval/tokens_mean"] > 0, row["name"]
        assert len((out / "seed-0" / "rows" / f"{row['name']}.jsonl").read_text().splitlines()) == 12, row["name"]
    rows = {r["name"]: r for r in result["rows"]["0"]}
    assert rows["majority"]["votes"] >= 2
    assert rows["intrinsic"]["metrics"]["eval/attempts_mean"] == 2.0  # answer, review turn
    assert rows["bi"]["metrics"]["verify/acc"] is not None  # the S²R rows verify their own answers
    assert set(result["summary"]) == set(ROWS)
    assert set(result["seconds"]["0"]) >= {"base model", "bi data and sft", "score", "rl", "evaluation"}
    # each seed has the demo's files; the trained models of every method are there
    seed = out / "seed-0"
    assert [r["name"] for r in json.loads((seed / "results.json").read_text())["rows"]] == list(ROWS)
    for model in ("bi/bi-problem-solving", "methods/cct", "methods/mistake-tuning", "methods/r-tuning", "methods/dpo",
                  "methods/dw-dpo", "methods/dpo-trajectories", "methods/score-1", "methods/score-2", "rl/orl", "rl/prl"):
        assert (seed / model / "model" / "config.json").is_file(), model
    # the self-rethinking row's review turn shows the base model's own wrong training attempts
    first = json.loads((seed / "rows" / "self-rethinking.jsonl").open().readline())
    assert first["strategy"] == "intrinsic"
    settings = json.loads((seed / "rows" / "self-rethinking.jsonl.settings.json").read_text())
    assert "mistakes you made" in json.dumps(settings)
    html = (out / "report.html").read_text()
    assert all(name in html for name in ROWS) and html.count("<svg") >= 2
    printed = capsys.readouterr()
    assert "dpo-trajectories" in printed.out
    assert re.search(r"compare seed 0: score: done in", printed.err)
    again = (seed / "rows" / "cct.jsonl").read_text()
    assert main(args) == 0  # a rerun reuses every model and row
    assert (seed / "rows" / "cct.jsonl").read_text() == again
    assert json.loads((out / "results.json").read_text())["rows"] == result["rows"]
    # --collect summarises finished seeds without running anything; a seed that has not run is named
    (seed / "rows" / "cct.jsonl").unlink()
    assert main(args + ["--collect", "true"]) == 2
    assert "seed 0 has no rows/ trajectories of cct" in capsys.readouterr().err
    (seed / "rows" / "cct.jsonl").write_text(again)
    assert main(args + ["--collect", "true"]) == 0
    collected = json.loads((out / "results.json").read_text())
    assert collected["rows"] == result["rows"] and collected["summary"] == result["summary"]
    assert main(args + ["--seed", "0", "1", "--collect", "true"]) == 2
    assert f"{out / 'seed-1' / 'results.json'}: no finished run of seed 1" in capsys.readouterr().err
