"""Selective prediction (docs/metrics-selective.md): AP, risk–coverage and the certainty signals,
by hand; AP against scikit-learn where it is installed; `s2r metrics` and the report."""

import json
import random

import pytest

from s2r.cli import main
from s2r.metrics import compute_metrics
from s2r.selective import average_precision, certainty, risk_coverage, selective_accuracy


def att(answer, grade, verdict=None):
    return {"answer": answer, "grade": grade, "verdict": verdict}


def traj(id, answer, grade, **extra):
    return {"id": id, "problem": f"problem {id}", "gold": "g", "sample": 0, "attempts": [att(answer, grade)],
            "tokens": 10, "truncated": False, **extra}


def flat(points):
    return [v for p in points for v in p]


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_average_precision_by_hand():
    # thresholds 0.9: TP 1 FP 0 -> P 1, R 1/2; 0.8 (a tie, entered together): TP 2 FP 1 -> P 2/3, R 1;
    # 0.1: R stays 1. AP = 1/2 · 1 + 1/2 · 2/3 = 5/6
    assert average_precision([0.9, 0.8, 0.8, 0.1], [1, 0, 1, 0]) == pytest.approx(5 / 6)
    # the wrong one ranked first: 1.0: P 0, R 0; 0.5: P 1/2, R 1 -> AP = 1/2
    assert average_precision([1.0, 0.5], [0, 1]) == pytest.approx(1 / 2)
    # everything tied: one threshold, P = share correct = 1/3, R = 1
    assert average_precision([0.5, 0.5, 0.5], [1, 0, 0]) == pytest.approx(1 / 3)
    assert average_precision([0.3, 0.9], [0, 0]) is None  # no correct answer: recall undefined
    assert average_precision([], []) is None


def test_average_precision_matches_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 12)
        scores = [rng.choice([0.0, 0.25, 0.5, 0.75, 1.0, rng.random()]) for _ in range(n)]  # many ties
        labels = [rng.random() < 0.5 for _ in range(n)]
        if any(labels):
            assert average_precision(scores, labels) == pytest.approx(
                sklearn_metrics.average_precision_score(labels, scores))


def test_risk_coverage_and_answered_accuracy_by_hand():
    # answer where score ≥ t: t = 1 -> 2 answered (1 right), t = 0.5 -> 3 (2 right), t = 0 -> all 4 (2 right)
    assert flat(risk_coverage([1, 1, 0.5, 0], [1, 0, 1, 0])) == pytest.approx(flat([(1, 0.5, 0.5), (0.5, 0.75, 1 / 3), (0, 1, 0.5)]))
    # answered = score > 0.5: the first two, one right
    assert selective_accuracy([1, 1, 0.5, 0], [1, 0, 1, 0]) == (0.5, 0.5)
    assert selective_accuracy([0.5, 0.2], [1, 0]) == (0.0, None)  # nothing answered: accuracy undefined
    assert selective_accuracy([], []) == (None, None)


# Majority votes of 4.     votes for the final answer  share   final
VOTES = [
    traj("v1", "5", "correct", votes=["5", "5", " 5", "3"]),  # 3 ("5" and " 5" are the same answer)  0.75  right
    traj("v2", "2", "correct", votes=["2", "2", "7", "7"]),  # 2                                    0.5   right
    traj("v3", "1", "incorrect", votes=["1", "1", "1", "1"]),  # 4                                  1.0   wrong
    traj("v4", "8", "incorrect", votes=[None, None, "8", None]),  # 1 (answerless samples count)   0.25  wrong
    traj("v5", None, "unverifiable", votes=[None, None, None, None]),  # no answer                 0.0   wrong
]


def test_vote_share_signal_by_hand():
    assert [certainty(r) for r in VOTES] == [("vote_share", s) for s in (0.75, 0.5, 1.0, 0.25, 0.0)]
    result = compute_metrics(VOTES)
    m = result["overall"]
    assert m["select/coverage"] == pytest.approx(2 / 5)  # v1 and v3 are above 0.5
    assert m["select/acc_answered"] == pytest.approx(1 / 2)  # v1 right, v3 wrong
    # ranked 1.0 (wrong): P 0, R 0; 0.75 (right): P 1/2, R 1/2; 0.5 (right): P 2/3, R 1 -> AP = 1/4 + 1/3
    assert m["select/ap"] == pytest.approx(7 / 12)
    # risk = wrong / answered at thresholds 1, 0.75, 0.5, 0.25, 0
    assert result["risk_coverage"]["signals"] == {"vote_share": 5}
    assert flat(result["risk_coverage"]["points"]) == pytest.approx(
        flat([[1.0, 1 / 5, 1.0], [0.75, 2 / 5, 1 / 2], [0.5, 3 / 5, 1 / 3], [0.25, 4 / 5, 1 / 2], [0.0, 1.0, 3 / 5]]))


def test_stated_certainty_comes_first_then_the_last_verdict():
    s2r = {"strategy": "s2r"}
    records = [
        traj("s1", "1", "correct", certainty=0.9),
        traj("s2", "2", "incorrect", certainty=0.2),
        traj("s3", "3", "incorrect", certainty=0.95, votes=["3", "4"]),  # stated wins over the vote (0.5)
        {**traj("s4", "4", "correct", certainty=None, **s2r), "attempts": [att("4", "correct", "correct")]},  # null: next signal
        {**traj("s5", "5", "incorrect", **s2r), "attempts": [att("5", "incorrect", None)]},  # s2r cut before its check: 0
    ]
    assert [certainty(r) for r in records] == [("stated", 0.9), ("stated", 0.2), ("stated", 0.95), ("last_verdict", 1.0),
                                               ("last_verdict", 0.0)]
    result = compute_metrics(records)
    m = result["overall"]
    assert m["select/coverage"] == pytest.approx(3 / 5)  # s1, s3, s4
    assert m["select/acc_answered"] == pytest.approx(2 / 3)  # s1, s4 right
    # ranked 1.0 (right): P 1, R 1/2; 0.95 (wrong): P 1/2; 0.9 (right): P 2/3, R 1 -> AP = 1/2 + 1/3
    assert m["select/ap"] == pytest.approx(5 / 6)
    assert result["risk_coverage"]["signals"] == {"stated": 3, "last_verdict": 2}


def test_no_signal_no_selective_metrics():
    records = [traj("a", "1", "correct"), traj("b", "2", "incorrect")]  # single answers, never verified
    result = compute_metrics(records)
    assert not any(k.startswith("select/") for k in result["overall"]) and "risk_coverage" not in result
    # a signal on only some records: the metrics are over those
    result = compute_metrics(records + [traj("c", "3", "incorrect", certainty=1.0)])
    assert result["overall"]["select/coverage"] == 1.0 and result["overall"]["select/ap"] is None  # none right


@pytest.mark.parametrize("bad, message", [
    ({"certainty": 1.5}, "'certainty' must be a number in [0, 1] or null"),
    ({"certainty": "sure"}, "'certainty' must be a number in [0, 1] or null"),
    ({"certainty": True}, "'certainty' must be a number in [0, 1] or null"),
    ({"votes": "5"}, "'votes' must be a list of answers"),
])
def test_metrics_cli_rejects_bad_signals_with_file_and_line(tmp_path, capsys, bad, message):
    src = write(tmp_path / "t.jsonl", [traj("a", "1", "correct"), traj("b", "1", "correct", **bad)])
    assert main(["metrics", str(src)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"s2r metrics: error: {src}:2: ") and message in err and "\n" not in err


def test_metrics_cli_prints_and_writes_the_selective_family(tmp_path, capsys):
    src = write(tmp_path / "t.jsonl", VOTES)
    assert main(["metrics", str(src), "--out", str(tmp_path / "m.json")]) == 0
    assert "select/ap" in capsys.readouterr().out
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["overall"]["select/ap"] == pytest.approx(7 / 12) and len(saved["risk_coverage"]["points"]) == 5


def test_report_draws_one_risk_coverage_line_per_run_with_a_signal():
    from s2r.report import render_report

    html = render_report("sel", {"vote": VOTES, "plain": [traj("a", "1", "correct")]})
    assert "Risk–coverage" in html and html.count("<polyline") == 1  # "plain" has no signal
    assert "vote: vote_share (5)" in html
    assert "Risk–coverage" not in render_report("none", {"plain": [traj("a", "1", "correct")]})
