"""METRICS.md: each formula on hand-computed files, the identities on random data, `s2r metrics`."""

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s2r.cli import main
from s2r.jsonl import DataError
from s2r.metrics import compute_metrics, load_trajectories, pass_at_k


def att(answer, grade, verdict=None):
    return {"answer": answer, "grade": grade, "verdict": verdict}


def traj(id, attempts, tokens, truncated=False, sample=0, **extra):
    return {"id": id, "problem": f"problem {id}", "gold": "g", "sample": sample, "attempts": attempts,
            "tokens": tokens, "truncated": truncated, **extra}


# Five trajectories, one sample each.       first  final   verdicts (truth, said)
HAND = [
    traj("p1", [att("4", "correct", "correct")], 10, level=1),  # c -> c   (c,c)
    traj("p2", [att("3", "incorrect", "incorrect"), att("5", "correct", "correct")], 30, level=1),  # fixed  (i,i) (c,c)
    traj("p3", [att("7", "correct", "incorrect"), att("8", "incorrect", "correct")], 40, level=2),  # broken (c,i) (i,c)
    traj("p4", [att("1", "incorrect", "correct")], 20, level=2),  # i -> i   (i,c)
    traj("p5", [att(None, "unverifiable", "unparsable")], 100, truncated=True, level=2),  # no answer, cut off
]


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_hand_computed_metrics_through_the_cli(tmp_path):
    src = write(tmp_path / "traj.jsonl", HAND)
    assert main(["metrics", str(src), "--out", str(tmp_path / "m.json")]) == 0
    result = json.loads((tmp_path / "m.json").read_text())
    m = result["overall"]
    expected = {
        "eval/acc_first": 2 / 5,  # p1, p3
        "eval/acc_final": 2 / 5,  # p1, p2
        "eval/delta": 0.0,
        "eval/i2c": 1 / 5,  # p2
        "eval/c2i": 1 / 5,  # p3
        "eval/unverifiable": 1 / 5,  # p5
        "eval/attempts_mean": 7 / 5,  # 1 + 2 + 2 + 1 + 1
        "eval/tokens_mean": 40.0,  # (10 + 30 + 40 + 20 + 100) / 5
        "eval/truncated": 1 / 5,
        # 6 judged verdicts: TP = 2 (p1, p2b), TN = 1 (p2a), FN = 1 (p3a), FP = 2 (p3b, p4)
        "verify/acc": 3 / 6,
        "verify/tpr": 2 / 3,
        "verify/tnr": 1 / 3,
        "verify/precision": 2 / 4,
        "verify/f1": 4 / 7,  # 2 · (1/2) · (2/3) / (1/2 + 2/3)
        "verify/unparsable": 1 / 7,  # 7 attempts carry a verification, p5's is unparsable
        "verify/first_acc_on_correct": 1 / 2,  # first attempts p1 (right), p3 (wrong)
        "verify/first_acc_on_incorrect": 1 / 2,  # first attempts p2 (right), p4 (wrong)
        "fail/lost_right": 1 / 5,  # p3: 7 was right, rejected
        "fail/accepted_wrong": 1 / 5,  # p4: never right, said "correct"
        "fail/never_right": 1 / 5,  # p5: no answer
        # k = 1: P(a) = [1, 0, 1, 0, 0]; P(a)P(b|a) = [1, 0, 0, 0, 0]; (1-P(a))P(b|¬a) = [0, 1, 0, 0, 0]
        "eval/acc1": 2 / 5,
        "eval/acc2": 2 / 5,
        "eval/cl": 1 / 2,
        "eval/cs": 1 / 3,
        "eval/rss": 0.5,  # (0.4 − 0.16) / (2 · 0.4 · 0.6)
        # certainty = the last verdict: p1–p4 say "correct" (1), p5 unparsable (0); p1, p2 are right
        "select/coverage": 4 / 5,
        "select/acc_answered": 2 / 4,
        "select/ap": 1 / 2,  # one threshold above 0: P = 2/4 at R = 1
    }
    assert m.keys() == expected.keys()
    for name, value in expected.items():
        assert m[name] == pytest.approx(value), name
    assert result["by_level"]["1"]["eval/acc_final"] == 1.0 and result["by_level"]["2"]["eval/acc_first"] == pytest.approx(1 / 3)
    assert result["counts"] == {"trajectories": 5, "problems": 5, "attempts": 7, "verifications": 7}


def test_sampling_metrics_by_hand():
    a = [("2", "correct"), ("2", "correct"), ("3", "incorrect"), (None, "unverifiable")]
    b = [("5", "correct"), ("6", "incorrect"), ("6", "incorrect"), ("7", "incorrect")]
    records = [traj(pid, [att(ans, g)], 5, sample=s) for pid, rows in (("A", a), ("B", b)) for s, (ans, g) in enumerate(rows)]
    m = compute_metrics(records)["overall"]
    # maj@1: A "2" ok, B "5" ok; maj@2: A "2" ok, B tie 5/6 -> first seen "5" ok; maj@4: A "2" ok, B "6" wrong
    assert (m["eval/maj@1"], m["eval/maj@2"], m["eval/maj@4"]) == (1.0, 1.0, 0.5)
    # pass@1 = (2/4 + 1/4)/2; pass@2 = ((1 − C(2,2)/C(4,2)) + (1 − C(3,2)/C(4,2)))/2 = (5/6 + 1/2)/2
    assert m["eval/pass@1"] == pytest.approx(0.375)
    assert m["eval/pass@2"] == pytest.approx(2 / 3)
    assert m["eval/pass@4"] == 1.0
    # one attempt each: nothing changes, so cl = 1, cs = 0 and rss = 0.5
    assert (m["eval/acc1"], m["eval/acc2"], m["eval/cl"], m["eval/cs"]) == (0.375, 0.375, 1.0, 0.0)
    assert m["eval/rss"] == pytest.approx(0.5)


def test_pass_at_k_estimator():
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 − C(3,2)/C(4,2) = 1 − 3/6
    assert pass_at_k(5, 0, 3) == 0.0 and pass_at_k(5, 3, 3) == 1.0 and pass_at_k(10, 3, 1) == pytest.approx(0.3)


def test_undefined_ratios_are_missing_not_zero():
    all_right = [traj("x", [att("1", "correct")], 3)]
    m = compute_metrics(all_right)["overall"]
    assert m["eval/cs"] is None and m["eval/rss"] is None  # acc1 = 1: no wrong first attempts
    assert m["verify/tpr"] is None and m["verify/unparsable"] is None  # nothing was verified
    assert m["eval/cl"] == 1.0


def test_malformed_trajectories_name_file_and_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(HAND[0]) + "\n" + json.dumps({**HAND[1], "attempts": []}) + "\n")
    with pytest.raises(DataError, match=rf"{path}:2: not a trajectory record: 'attempts' must be a non-empty list"):
        load_trajectories(path)
    path.write_text(json.dumps({**HAND[0], "attempts": [att("1", "maybe")]}) + "\n")
    with pytest.raises(DataError, match=rf"{path}:1: .*grade"):
        load_trajectories(path)
    assert main(["metrics", str(path)]) == 2


grade = st.sampled_from(["correct", "incorrect", "unverifiable"])
verdict = st.sampled_from(["correct", "incorrect", "unparsable", None])


@st.composite
def trajectory_files(draw, same_k=False):
    n_problems = draw(st.integers(1, 6))
    k_all = draw(st.integers(1, 4))
    records = []
    for i in range(n_problems):
        k = k_all if same_k else draw(st.integers(1, 4))
        for s in range(k):
            attempts = [att(str(draw(st.integers(0, 3))), draw(grade), draw(verdict)) for _ in range(draw(st.integers(1, 3)))]
            records.append(traj(f"p{i}", attempts, draw(st.integers(0, 50)), draw(st.booleans()), sample=s))
    return records


@settings(max_examples=200, deadline=None)
@given(trajectory_files())
def test_identities_on_random_data(records):
    m = compute_metrics(records)["overall"]
    assert m["eval/delta"] == pytest.approx(m["eval/i2c"] - m["eval/c2i"])
    acc1, cl, cs = m["eval/acc1"], m["eval/cl"], m["eval/cs"]
    acc2 = acc1 * (cl if cl is not None else 0) + (1 - acc1) * (cs if cs is not None else 0)
    assert m["eval/acc2"] == pytest.approx(acc2)  # acc2 = acc1·cl + (1 − acc1)·cs
    fails = m["fail/lost_right"] + m["fail/accepted_wrong"] + m["fail/never_right"]
    assert fails == pytest.approx(1 - m["eval/acc_final"])  # every wrong final answer in exactly one
    for name, value in m.items():
        assert value is None or math.isfinite(value)
        if value is not None and not name.endswith(("_mean", "delta")) and name != "eval/rss":
            assert 0.0 <= value <= 1.0, name


@settings(max_examples=100, deadline=None)
@given(trajectory_files(same_k=True))
def test_same_k_links_the_two_families(records):
    m = compute_metrics(records)["overall"]
    assert m["eval/acc1"] == pytest.approx(m["eval/acc_first"])
    assert m["eval/acc2"] == pytest.approx(m["eval/acc_final"])
    if all(r["sample"] == 0 for r in records):  # k = 1
        if m["eval/acc_first"] > 0:
            assert m["eval/cl"] == pytest.approx(1 - m["eval/c2i"] / m["eval/acc_first"])
        if m["eval/acc_first"] < 1:
            assert m["eval/cs"] == pytest.approx(m["eval/i2c"] / (1 - m["eval/acc_first"]))


def test_markers_written_by_the_loop_by_hand():
    records = [
        traj("a", [att("1", "incorrect", "incorrect"), att("2", "incorrect", "incorrect"), att("3", "correct", "correct")],
             50, loop_markers=[[40, 52, "eos"]]),  # 2 retries, 1 marker by the loop (the model stopped; no kind: a retry's)
        traj("b", [att("1", "incorrect", "incorrect"), att("2", "correct", "correct")], 30,
             loop_markers=[[10, 30, "cut", "verify"], [30, 42, "cut", "retry"]]),  # the first check's marker too
        traj("c", [att("2", "correct", "correct")], 10, loop_markers=[]),
        traj("d", [att("1", "incorrect"), att("2", "correct")], 10),  # another strategy: not counted
    ]
    m = compute_metrics(records)["overall"]
    assert m["eval/retry_by_loop"] == 2 / 3 and m["eval/retry_after_cut"] == 1 / 3
    assert m["eval/verify_by_loop"] == 1 / 6  # of the 3 + 2 + 1 attempts
    assert "eval/retry_by_loop" not in compute_metrics(HAND)["overall"]  # no record of the loop's


def test_report_shows_where_the_failures_come_from():
    from s2r.report import render_report

    html = render_report("hand", {"run": HAND})
    assert "Where the wrong final answers come from" in html
    for label in ("right answer lost", "wrong answer accepted", "never right"):
        assert f"<title>{label} · run: 20%</title>" in html  # p3, p4, p5: one of five each
