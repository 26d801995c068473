"""Behaviour-initialisation data: verify (arith and HTTP teachers, cache, failures) and build (filters,
difficulty caps, the trained spans and the token mask of a three-attempt trajectory)."""


import pytest
from servers import free_port, start_server

from s2r.cli import main
from s2r.bi.build import BuildConfig, run_build, trained_spans
from s2r.bi.verify import ArithTeacher, VerifyConfig, clean_verification, run_verify
from s2r.format import DEFAULT_FORMAT as F
from s2r.format import render
from s2r.jsonl import read_jsonl, write_jsonl_atomic
from s2r.models.tiny import char_tokenizer
from s2r.tasks import load_problems
from s2r.train.batching import encode_spans


def attempt(benchmark, problem, sample, text, answer, grade, pid=None):
    return {"benchmark": benchmark, "id": pid or problem, "problem": problem, "gold": "?", "level": 1, "subject": None,
            "sample": sample, "strategy": "single", "text": text, "truncated": False,
            "attempts": [{"answer": answer, "grade": grade, "verdict": None, "reason": None}]}


# ----------------------------------------------------------------------------------- verify


def arith_attempts(path):
    p = "Compute 91 / 7."  # = 13
    answers = [("13", "correct"), ("12", "incorrect"), ("12", "incorrect"), (None, "incorrect"), ("14", "incorrect")]
    rows = [attempt("arith", p, i, f"91 / 7 = {a}\nThe answer is \\boxed{{{a}}}." if a else "91 / 7 =", a, g)
            for i, (a, g) in enumerate(answers)]
    write_jsonl_atomic(path, rows)


def test_arith_verify_one_per_distinct_answer_with_cache(tmp_path, capsys, monkeypatch):
    arith_attempts(tmp_path / "a.jsonl")
    cfg = VerifyConfig(str(tmp_path / "a.jsonl"), out=str(tmp_path / "v.jsonl"), cache=str(tmp_path / "cache.jsonl"))
    stats = run_verify(cfg)
    out = {r["answer"]: r for r in read_jsonl(tmp_path / "v.jsonl")}
    assert sorted(out) == ["12", "13", "14"]  # the attempt without an answer is not verified...
    assert {r["wrong"] for r in out.values()} == {4}  # ...but counts as wrong
    assert out["12"]["count"] == 2 and out["13"]["verdict"] == "correct" and out["14"]["verdict"] == "incorrect"
    assert all(r["agrees"] for r in out.values()) and out["13"]["solution"].endswith("\\boxed{13}.")
    assert stats["correct"] == {"answers": 1, "agree": 1, "unparsable": 0} and stats["incorrect"]["agree"] == 2
    assert "judged incorrect      2 (100.0%)" in capsys.readouterr().out
    # A second run on the same answers asks the teacher nothing: everything comes from the cache.
    monkeypatch.setattr(ArithTeacher, "verify", lambda self, items: pytest.fail("teacher called"))
    run_verify(VerifyConfig(cfg.attempts, out=str(tmp_path / "v2.jsonl"), cache=cfg.cache))
    assert list(read_jsonl(tmp_path / "v2.jsonl")) == list(read_jsonl(tmp_path / "v.jsonl"))


def test_arith_teacher_refuses_other_problems(tmp_path):
    write_jsonl_atomic(tmp_path / "a.jsonl", [attempt("math500", "What is $x$?", 0, "\\boxed{2}", "2", "correct")])
    with pytest.raises(ValueError, match="only the embedded task"):
        run_verify(VerifyConfig(str(tmp_path / "a.jsonl"), out=str(tmp_path / "v.jsonl"), cache=str(tmp_path / "c.jsonl")))


def test_clean_verification_cuts_after_the_verdict_and_drops_markers():
    text = f"  Plug in: 2+2=4.\n{F.verify_marker}\n{F.correct_sentence}\nAnything after.  "
    assert clean_verification(text, F) == f"Plug in: 2+2=4.\n{F.correct_sentence}"


# ----------------------------------------------------------------------------------- build


def verified(problem, answer, grade, verdict, wrong, solution=None):
    return {"benchmark": "arith", "id": problem, "problem": problem, "gold": "?", "level": 1, "subject": None,
            "answer": answer, "grade": grade, "solution": solution or f"S({answer}) \\boxed{{{answer}}}", "count": 1,
            "samples": 5, "wrong": wrong, "verification": f"V({answer}) " + (F.correct_sentence if verdict == "correct" else F.incorrect_sentence),
            "verdict": verdict, "agrees": (grade == "correct") == (verdict == "correct")}


def build_input(path):
    rows = [verified("P1", "1", "correct", "correct", 4)]
    rows += [verified("P1", a, "incorrect", "incorrect", 4) for a in ("2", "3", "4")]
    rows += [verified("P1", "5", "incorrect", "correct", 4)]  # the teacher is wrong: never used
    rows += [verified("P2", "1", "correct", "correct", 1), verified("P2", "2", "incorrect", "incorrect", 1)]
    rows += [verified("P3", "1", "correct", "correct", 0)]
    rows += [verified("P4", "1", "correct", "incorrect", 3), verified("P4", "2", "incorrect", "incorrect", 3)]
    write_jsonl_atomic(path, rows)


def test_build_caps_wrong_attempts_by_difficulty(tmp_path, capsys):
    build_input(tmp_path / "v.jsonl")
    records = {r["id"]: r for r in run_build(BuildConfig(str(tmp_path / "v.jsonl"), out=str(tmp_path / "bi.jsonl")))}
    assert sorted(records) == ["P1", "P2", "P3"]  # P4 has no verified-correct attempt
    assert {k: r["wrong_attempts"] for k, r in records.items()} == {"P1": 3, "P2": 1, "P3": 0}
    p1 = records["P1"]["completion"]
    assert "S(5)" not in p1 and p1.count(F.incorrect_sentence) == 3 and p1.endswith(F.correct_sentence)
    assert p1.index("S(1)") > max(p1.index(f"S({a})") for a in "234")  # the correct attempt comes last
    assert "1 no verified-correct attempt" in capsys.readouterr().out
    # caps are configuration; plain keeps the same problems with the correct attempt alone
    capped = run_build(BuildConfig(str(tmp_path / "v.jsonl"), out=str(tmp_path / "c.jsonl"), max_wrong=[0, 1]))
    assert [r["wrong_attempts"] for r in capped] == [1, 1, 0]
    plain = run_build(BuildConfig(str(tmp_path / "v.jsonl"), out=str(tmp_path / "p.jsonl"), kind="plain"))
    assert [(r["id"], r["completion"], r["spans"]) for r in plain] == [(k, "S(1) \\boxed{1}", [[0, 14]]) for k in ("P1", "P2", "P3")]
    none = run_build(BuildConfig(str(tmp_path / "v.jsonl"), out=str(tmp_path / "n.jsonl"), keep=[1.0, 0.0]))
    assert [r["id"] for r in none] == ["P3"]  # keep-probability 0 for one or more wrong samples


def test_loss_mask_of_a_three_attempt_trajectory():
    text = render(["1+1=3 \\boxed{3}", "1+1=1 \\boxed{1}", "1+1=2 \\boxed{2}"],
                  [f"3-1=2. {F.incorrect_sentence}", f"1-1=0. {F.incorrect_sentence}", f"2-1=1. {F.correct_sentence}"])
    spans = trained_spans(text, F)
    assert [text[s:e] for s, e in spans] == [
        "\n\nWait, let me recheck my solution.\n3-1=2. Therefore, the answer is incorrect.",
        "\n\nWait, let me recheck my solution.\n1-1=0. Therefore, the answer is incorrect.",
        "\n\nLet me try again.\n1+1=2 \\boxed{2}",
        "\n\nWait, let me recheck my solution.\n2-1=1. Therefore, the answer is correct.",
    ]  # never "1+1=3 \\boxed{3}" or "...1+1=1 \\boxed{1}": wrong attempts are context only
    tok = char_tokenizer()
    ids, mask = encode_spans(tok, "Q: 1+1\n", text, spans)
    trained = "".join(tok.decode([i]) if i != tok.eos_token_id else "<eos>" for i, m in zip(ids, mask) if m)
    assert trained == "".join(text[s:e] for s, e in spans) + "<eos>"
    assert len(ids) == len(tok("Q: 1+1\n")["input_ids"]) + len(text) + 1


def test_encode_spans_pinned():
    tok = char_tokenizer()
    ids, mask = encode_spans(tok, "Q:", "abcd", [(1, 2), (3, 4)])
    assert tok.convert_ids_to_tokens(ids) == ["Q", ":", "a", "b", "c", "d", "<eos>"]
    assert mask == [0, 0, 0, 1, 0, 1, 1]


# ----------------------------------------------------------------------------------- HTTP teacher


TEACHER_REPLY = f"Checked.\n{F.correct_sentence}"


@pytest.fixture(scope="module")
def teacher_server(tmp_path_factory, data_dir):
    """`s2r serve` over a tiny chat model fine-tuned (by `s2r sft`) to give one fixed confirmative reply."""
    from s2r.bi.verify import CONFIRMATIVE_PROMPT

    root = tmp_path_factory.mktemp("teacher")
    assert main(["tiny-model", str(root / "start"), "--chat-template", "true"]) == 0
    prompts = [CONFIRMATIVE_PROMPT.format(problem=p.problem, answer=a, solution="", correct_sentence=F.correct_sentence,
                                          incorrect_sentence=F.incorrect_sentence)
               for p in load_problems("math500", data_dir=data_dir, limit=3) for a in (p.gold, "12345")]
    write_jsonl_atomic(root / "sft.jsonl", [{"problem": q, "completion": TEACHER_REPLY, "spans": [[0, len(TEACHER_REPLY)]]}
                                            for q in prompts])
    assert main(["sft", str(root / "sft.jsonl"), "--model", str(root / "start"), "--out", str(root / "sft"), "--epochs", "80",
                 "--batch-size", "6", "--micro-batch-size", "6", "--lr", "1e-2", "--kl-coef", "0", "--system", "",
                 "--template", "chat", "--tensorboard", "false", "--warmup-ratio", "0", "--min-lr-ratio", "1"]) == 0
    url, proc = start_server([str(root / "sft" / "model")])
    yield url, proc
    proc.terminate()
    proc.wait(timeout=10)


def test_http_teacher_builds_math500_data_end_to_end(tmp_path, data_dir, teacher_server, capsys):
    url, proc = teacher_server
    problems = load_problems("math500", data_dir=data_dir, limit=3)
    rows = []
    for p in problems:
        rows.append({**attempt("math500", p.problem, 0, f"Work.\nThe answer is $\\boxed{{{p.gold}}}$.", p.gold, "correct", p.id), "gold": p.gold})
        rows.append({**attempt("math500", p.problem, 1, "Work.\nThe answer is $\\boxed{12345}$.", "12345", "incorrect", p.id), "gold": p.gold})
    write_jsonl_atomic(tmp_path / "a.jsonl", rows)
    cache = str(tmp_path / "cache.jsonl")
    args = ["verify", str(tmp_path / "a.jsonl"), "--out", str(tmp_path / "v.jsonl"), "--teacher", "http", "--base-url", url,
            "--cache", cache, "--max-tokens", "200"]
    assert main(args) == 0
    out = list(read_jsonl(tmp_path / "v.jsonl"))
    assert len(out) == 6 and all(r["verification"] == TEACHER_REPLY for r in out)  # the served model's own reply
    assert [r["agrees"] for r in out] == [True, False] * 3  # it calls everything correct
    assert "judged correct        3 (100.0%)" in capsys.readouterr().out
    assert main(["build", str(tmp_path / "v.jsonl"), "--out", str(tmp_path / "bi.jsonl")]) == 0
    bi = list(read_jsonl(tmp_path / "bi.jsonl"))
    assert [r["id"] for r in bi] == [p.id for p in problems] and all(r["wrong_attempts"] == 0 for r in bi)
    assert bi[0]["completion"] == f"Work.\nThe answer is $\\boxed{{{problems[0].gold}}}$.\n\n{F.verify_marker}\n{TEACHER_REPLY}"


def test_http_teacher_failures_are_counted_and_the_cache_serves_reruns(tmp_path, data_dir, capsys):
    p = load_problems("math500", data_dir=data_dir, limit=1)[0]
    write_jsonl_atomic(tmp_path / "a.jsonl", [{**attempt("math500", p.problem, 0, "\\boxed{1}", "1", "incorrect", p.id), "gold": p.gold}])
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    args = ["verify", str(tmp_path / "a.jsonl"), "--out", str(tmp_path / "v.jsonl"), "--teacher", "http", "--base-url", dead,
            "--model", "m", "--cache", str(tmp_path / "cache.jsonl"), "--retries", "1"]
    assert main(args) == 2
    err = capsys.readouterr()
    assert "endpoint failures: 1" in err.out and "1 of 1 verifications failed" in err.err
    assert not (tmp_path / "v.jsonl").exists()
    # The same answer served from the cache needs no endpoint.
    from s2r.cli import build_parser
    from s2r.config import from_args
    from s2r.bi.verify import HTTPTeacher, VerificationCache

    teacher = HTTPTeacher(from_args(VerifyConfig, build_parser().parse_args(args)))
    cache = VerificationCache(tmp_path / "cache.jsonl")
    cache.put(cache.key(teacher.id, "confirmative", p.problem, "1"), f"No. {F.incorrect_sentence}")
    cache.close()
    teacher.close()
    assert main(args) == 0
    assert [r["verdict"] for r in read_jsonl(tmp_path / "v.jsonl")] == ["incorrect"]
