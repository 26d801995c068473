"""S²R's relatives as commands: R-Tuning's records and certainty statement by hand; the two new SFT
record shapes (messages, prefix) and their loss masks; the assistant prefix in every strategy; the
model folder's s2r.json; and each method end to end through the CLI on a tiny chat model and gsm8k
problems: sample -> build -> sft -> eval."""

import doctest
import json

import pytest
from fakes import ScriptedBackend

import s2r.methods.rtuning
from s2r.cli import main
from s2r.grader import Grader
from s2r.jsonl import DataError, read_jsonl, write_jsonl_atomic
from s2r.loop import Settings, solve_problems
from s2r.methods.rtuning import SURE, UNSURE, r_tuning_records, stated_certainty
from s2r.models.tiny import TinyModelConfig, run_tiny_model
from s2r.prompts import DEFAULT_REVIEW, PromptConfig, PromptFields, model_prompt, write_model_prompt
from s2r.settings_guard import settings_path
from s2r.tasks import Problem
from s2r.train.sft import SFTConfig, encode_records, read_records


def sampled(pid, sample, answer, grade, text=None):
    text = text or (f"so \\boxed{{{answer}}}" if answer is not None else "no answer")
    return {"benchmark": "t", "id": pid, "problem": f"Compute {pid}.", "gold": "7", "level": None, "subject": None,
            "sample": sample, "strategy": "single", "tokens": 5, "truncated": False, "text": text,
            "attempts": [{"answer": answer, "grade": grade, "verdict": None, "reason": ""}]}


# ----------------------------------------------------------------------------------- R-Tuning by hand


def test_r_tuning_records_by_hand():
    attempts = [
        sampled("p1", 0, "7", "correct"), sampled("p1", 1, "8", "incorrect"), sampled("p1", 2, "7", "correct"),
        sampled("p2", 0, "8", "incorrect"), sampled("p2", 1, None, "unverifiable"),  # no answer: gradable, not right
        sampled("p3", 0, "7", "correct"), sampled("p3", 1, "8", "incorrect"), sampled("p3", 2, "9", "incorrect"),
        sampled("p4", 0, "7", "unverifiable"),  # the grader could not check it: left out
    ]
    records, counts = r_tuning_records(attempts, threshold=0.5, seed=0)
    assert counts == {"sure": 1, "unsure": 2, "problems_without_a_gradable_sample": 1}
    by = {r["id"]: r for r in records}
    # p1: 2 of 3 right ≥ 0.5 -> sure; a right text, trained whole with its statement
    p1 = by["p1"]
    assert p1["rtuning"] == "sure" and p1["completion"] == "so \\boxed{7}\n\nI am sure."
    assert p1["spans"] == [[0, len(p1["completion"])]] and p1["right_share"] == pytest.approx(2 / 3)
    # p2: 0 of 2 right -> unsure; no right text: the first sample is context, only "\n\nI am unsure." trained
    p2 = by["p2"]
    assert p2["completion"] == "so \\boxed{8}\n\nI am unsure." and p2["spans"] == [[len("so \\boxed{8}"), len(p2["completion"])]]
    assert p2["completion"][p2["spans"][0][0]:] == "\n\n" + UNSURE
    # p3: 1 of 3 right < 0.5 -> unsure, but it has a right text: trained whole
    p3 = by["p3"]
    assert p3["completion"] == "so \\boxed{7}\n\nI am unsure." and p3["spans"] == [[0, len(p3["completion"])]]
    # threshold 1/3: p3 becomes sure
    assert r_tuning_records(attempts, threshold=1 / 3)[1]["sure"] == 2
    with pytest.raises(ValueError, match="threshold"):
        r_tuning_records(attempts, threshold=1.5)


def test_stated_certainty_reads_the_statement_after_the_final_answer():
    assert stated_certainty("7 + 1 = 8, \\boxed{8}\n\nI am sure.") == 1.0
    assert stated_certainty("\\boxed{8}\n\n  I am unsure.  \n") == 0.0
    assert stated_certainty("\\boxed{8}\nI am sure.\nHmm, \\boxed{9}\nI am unsure.") == 0.0  # the last answer's
    assert stated_certainty("I am sure.\nSo \\boxed{9}") is None  # before the final answer: not a statement about it
    assert stated_certainty("\\boxed{8} I am sure.") is None  # not a line of its own
    assert stated_certainty("\\boxed{8}") is None and stated_certainty("I am unsure.") == 0.0
    assert SURE not in UNSURE
    assert doctest.testmod(s2r.methods.rtuning).failed == 0


# ----------------------------------------------------------------------------------- the loop


PLAIN = PromptConfig(system="", template="plain")


def run(scripts, strategy, prompt=PLAIN, votes=2):
    backend = ScriptedBackend(scripts)
    jobs = [("t", Problem(id=str(i), problem=p, gold="5"), 0) for i, p in enumerate(scripts)]
    with Grader(timeout=5, workers=1) as grader:
        records, _ = solve_problems(backend, jobs, strategy, Settings(max_tokens=200, votes=votes, prompt=prompt), grader)
    return records, backend


@pytest.mark.parametrize("strategy", ["single", "s2r", "majority", "intrinsic"])
def test_the_assistant_prefix_opens_the_first_turn_of_every_strategy(strategy):
    prefix = "[Correct rationale]\n"
    records, backend = run({"p": ["\\boxed{5}", "\\boxed{5}"]}, strategy, PromptConfig(system="", template="plain",
                                                                                      assistant_prefix=prefix))
    first = backend.calls[0][1]
    assert first == "Question: p\nAnswer:\n" + prefix
    assert not records[0]["text"].startswith(prefix)  # the record's text is the model's
    if strategy == "intrinsic":  # the second turn: the history holds the whole first message, no new prefix
        second = backend.calls[1][1]
        assert prefix + "\\boxed{5}" in second and not second.endswith(prefix)
    assert Settings(prompt=PromptConfig(assistant_prefix=prefix)).record(strategy, "m")["assistant_prefix"] == prefix
    assert "assistant_prefix" not in Settings().record(strategy, "m")  # old trajectories files still resume


@pytest.mark.parametrize("strategy", ["single", "intrinsic"])
def test_a_certainty_statement_is_kept_and_read_without_changing_the_answer(strategy):
    records, _ = run({"p": ["x \\boxed{5}\n\nI am sure.", "y \\boxed{5}\n\nI am sure."],
                      "q": ["x \\boxed{4}\n\nI am unsure.", "y \\boxed{4}\n\nI am unsure."], "r": ["\\boxed{5}", "ok"]},
                     strategy)
    p, q, r = records
    assert p["certainty"] == 1.0 and p["text"].endswith("I am sure.") and p["attempts"][-1]["answer"] == "5"
    assert q["certainty"] == 0.0 and q["attempts"][-1]["grade"] == "incorrect"
    assert "certainty" not in r


# ----------------------------------------------------------------------------------- s2r.json


def test_the_model_folder_carries_the_review_prompt_and_the_assistant_prefix(tmp_path):
    write_model_prompt(tmp_path, PromptConfig(system="", template="plain"))
    assert json.loads((tmp_path / "s2r.json").read_text()) == {"system": "", "template": "plain"}  # defaults: not written
    got = PromptFields().from_model(tmp_path)
    assert (got.review_prompt, got.assistant_prefix) == (DEFAULT_REVIEW, "")
    write_model_prompt(tmp_path, PromptConfig(system="", template="plain", review_prompt="Check.", assistant_prefix="[C]\n"))
    assert model_prompt(tmp_path) == {"system": "", "template": "plain", "review_prompt": "Check.", "assistant_prefix": "[C]\n"}
    got = PromptFields(review_prompt="Mine.").from_model(tmp_path)  # a given setting wins
    assert (got.system, got.review_prompt, got.assistant_prefix) == ("", "Mine.", "[C]\n")
    assert got.prompt_config() == PromptConfig(system="", template="plain", review_prompt="Mine.", assistant_prefix="[C]\n")
    (tmp_path / "s2r.json").write_text('{"system": "", "assistant_prefix": 3}')
    with pytest.raises(DataError, match="s2r.json"):
        model_prompt(tmp_path)


# ----------------------------------------------------------------------------------- SFT record shapes


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("relatives")
    return root, str(run_tiny_model(TinyModelConfig(str(root / "model"), seed=0, chat_template=True)))


def test_messages_and_prefix_records_train_exactly_their_completion_spans(tiny, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny[1])
    conv = [{"role": "user", "content": "Compute 2 + 3."}, {"role": "assistant", "content": "\\boxed{6}"},
            {"role": "user", "content": "Review."}]
    records = [{"messages": conv, "completion": "No: \\boxed{5}", "spans": [[4, 13]]},
               {"problem": "Compute 2 + 3.", "prefix": "[Correct rationale]\n", "completion": "2 + 3 = 5", "spans": [[0, 9]]}]
    write_jsonl_atomic(tmp_path / "sft.jsonl", records)
    cfg = SFTConfig(data=str(tmp_path / "sft.jsonl"), model=tiny[1], system="Be brief.", template="chat")
    (ids1, mask1), (ids2, mask2) = encode_records(cfg.data, read_records(cfg.data), tok, cfg)[0]
    trained = lambda ids, mask: tok.decode([i for i, m in zip(ids, mask) if m])  # noqa: E731
    assert trained(ids1, mask1) == "\\boxed{5}" + tok.eos_token and trained(ids2, mask2) == "2 + 3 = 5" + tok.eos_token
    # the prompt: the config's system prompt, then the conversation / the problem, then the prefix
    prompt1, prompt2 = tok.decode(ids1[: mask1.index(1)]), tok.decode(ids2[: mask2.index(1)])
    assert prompt1.endswith("<|system|>\nBe brief.\n<|user|>\nCompute 2 + 3.\n<|assistant|>\n\\boxed{6}\n"
                            "<|user|>\nReview.\n<|assistant|>\nNo: ")  # "No: " is context: outside the span
    assert prompt2.endswith("<|system|>\nBe brief.\n<|user|>\nCompute 2 + 3.\n<|assistant|>\n[Correct rationale]\n")


@pytest.mark.parametrize("record, message", [
    ({"messages": [], "completion": "a", "spans": []}, "non-empty list"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "completion": "a",
      "spans": []}, "last message must be the user's"),
    ({"messages": [{"role": "robot", "content": "q"}], "completion": "a", "spans": []}, "message 0"),
    ({"messages": [{"role": "user", "content": "q"}], "prefix": "[C]", "completion": "a", "spans": []}, "not both"),
    ({"problem": "q", "prefix": 3, "completion": "a", "spans": []}, "'prefix' must be str"),
    ({"problem": "q", "prefix": "[C]", "completion": "ab", "spans": [[0, 3]]}, "completion's length"),
])
def test_bad_records_are_one_line_errors_naming_the_line(tmp_path, record, message):
    write_jsonl_atomic(tmp_path / "bad.jsonl", [{"problem": "q", "completion": "a", "spans": [[0, 1]]}, record])
    with pytest.raises(DataError, match=f"bad.jsonl:2: .*{message}") as e:
        read_records(str(tmp_path / "bad.jsonl"))
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------------- end to end (CLI)


@pytest.fixture(scope="module")
def attempts(tiny, data_dir):
    """`s2r sample` of the tiny model on 4 gsm8k problems (it gets none right), plus a handwritten
    right and wrong attempt per problem (samples 2 and 3), as a model that can do some would give."""
    root, model = tiny
    sampled_path = root / "sampled.jsonl"
    assert main(["sample", "--model", model, "--data", "gsm8k:train", "--limit", "4", "--data-dir", str(data_dir),
                 "--samples", "2", "--max-tokens", "8", "--template", "chat", "--system", "", "--device", "cpu",
                 "--out", str(sampled_path)]) == 0
    records = list(read_jsonl(sampled_path))
    assert len(records) == 8
    extra = []
    for r in records[::2]:
        for k, (answer, grade) in enumerate([(r["gold"], "correct"), (r["gold"] + "1", "incorrect")], start=2):
            extra.append({**r, "sample": k, "text": f"The answer is \\boxed{{{answer}}}.",
                          "attempts": [{"answer": answer, "grade": grade, "verdict": None, "reason": ""}]})
    write_jsonl_atomic(root / "attempts.jsonl", records + extra)
    return str(root / "attempts.jsonl")


def _sft(tiny, data, out, *extra):
    root, model = tiny
    assert main(["sft", data, "--model", model, "--out", str(root / out), "--epochs", "1", "--batch-size", "8",
                 "--template", "chat", "--system", "", "--tensorboard", "false", "--threads", "1", *extra]) == 0
    log = list(read_jsonl(root / out / "log.jsonl"))
    assert log and all(r["tokens"] > 0 for r in log)
    return root / out / "model"


def _eval(tiny, data_dir, model, out, *extra):
    ev = tiny[0] / out
    assert main(["eval", "--model", str(model), "--data", "gsm8k:train", "--limit", "2", "--data-dir", str(data_dir),
                 "--max-tokens", "8", "--device", "cpu", "--out", str(ev), *extra]) == 0
    settings = json.loads(settings_path(ev / "trajectories.jsonl").read_text())
    return list(read_jsonl(ev / "trajectories.jsonl")), settings


def test_cct_end_to_end(tiny, attempts, data_dir):
    root = tiny[0]
    assert main(["build", attempts, "--out", str(root / "cct.jsonl"), "--kind", "cct", "--review-prompt", "Check it."]) == 0
    records = list(read_jsonl(root / "cct.jsonl"))
    kinds = [r["cct"] for r in records]
    assert kinds.count("confidence") >= 4 and kinds.count("critique") >= 4  # each problem: its right and wrong answers
    assert all(r["messages"][-1]["content"] == "Check it." for r in records)
    model = _sft(tiny, str(root / "cct.jsonl"), "cct", "--review-prompt", "Check it.")
    assert json.loads((model / "s2r.json").read_text())["review_prompt"] == "Check it."
    trajectories, settings = _eval(tiny, data_dir, model, "eval-cct", "--strategy", "intrinsic")
    assert settings["review_prompt"] == "Check it."  # from the model folder, with no flag
    assert len(trajectories) == 2 and all(len(t["attempts"]) == 2 for t in trajectories)


def test_mistake_tuning_end_to_end(tiny, attempts, data_dir):
    root = tiny[0]
    assert main(["build", attempts, "--out", str(root / "mt.jsonl"), "--kind", "mistake-tuning"]) == 0
    records = list(read_jsonl(root / "mt.jsonl"))
    assert {r["prefix"] for r in records} == {"[Correct rationale]\n", "[Incorrect rationale]\n"}
    model = _sft(tiny, str(root / "mt.jsonl"), "mt", "--assistant-prefix", "[Correct rationale]\n")
    _, settings = _eval(tiny, data_dir, model, "eval-mt", "--strategy", "single")
    assert settings["assistant_prefix"] == "[Correct rationale]\n"  # from the model folder
    _, settings = _eval(tiny, data_dir, model, "eval-mt2", "--strategy", "single", "--assistant-prefix", "[C]\n")
    assert settings["assistant_prefix"] == "[C]\n"


def test_r_tuning_end_to_end(tiny, attempts, data_dir):
    root = tiny[0]
    assert main(["build", attempts, "--out", str(root / "rt.jsonl"), "--kind", "r-tuning", "--threshold", "0.25"]) == 0
    records = list(read_jsonl(root / "rt.jsonl"))
    # per problem 1 right of 4 gradable (the tiny model's samples have no answer: not right): 1/4 ≥ 0.25
    assert len(records) == 4 and all(r["rtuning"] == "sure" and r["completion"].endswith("\n\nI am sure.") for r in records)
    model = _sft(tiny, str(root / "rt.jsonl"), "rt")
    trajectories, _ = _eval(tiny, data_dir, model, "eval-rt", "--strategy", "single")
    assert len(trajectories) == 2
    assert all(t.get("certainty") == stated_certainty(t["text"]) for t in trajectories)  # a random model states none


def test_self_rethinking_end_to_end(tiny, attempts, data_dir):
    _, settings = _eval(tiny, data_dir, tiny[1], "eval-rethink", "--strategy", "intrinsic", "--template", "chat",
                        "--rethink-from", attempts, "--rethink-k", "2")
    review = settings["review_prompt"]
    assert review.startswith("Here are mistakes you made") and review.count("\n- ") == 2 and "You answered" in review
    ev = str(tiny[0] / "eval-rethink")
    base = ["eval", "--model", tiny[1], "--data", "gsm8k:train", "--limit", "2", "--data-dir", str(data_dir),
            "--max-tokens", "8", "--device", "cpu", "--template", "chat", "--rethink-from", attempts]
    assert main([*base, "--out", ev, "--strategy", "intrinsic", "--rethink-k", "1"]) == 2  # other settings: the guard stops
    assert main([*base, "--out", ev + "-single", "--strategy", "single"]) == 2  # only the intrinsic strategy has a review turn


def test_build_errors_are_one_line(tmp_path, capsys):
    write_jsonl_atomic(tmp_path / "verified.jsonl", [{"benchmark": "t", "id": "1", "problem": "q", "gold": "7"}])
    assert main(["build", str(tmp_path / "verified.jsonl"), "--out", str(tmp_path / "o.jsonl"), "--kind", "cct"]) == 2
    err = capsys.readouterr().err.strip()
    assert "verified.jsonl:1: not a sampled attempt" in err and "\n" not in err
    write_jsonl_atomic(tmp_path / "wrong.jsonl", [sampled("p", 0, "8", "incorrect")])  # no right sample: no CCT record
    assert main(["build", str(tmp_path / "wrong.jsonl"), "--out", str(tmp_path / "o.jsonl"), "--kind", "cct"]) == 2
    assert "no SFT records" in capsys.readouterr().err
    assert main(["build", str(tmp_path / "wrong.jsonl"), "--out", str(tmp_path / "o.jsonl"), "--kind", "nope"]) == 2
    assert "r-tuning" in capsys.readouterr().err
