"""`s2r dpo` end to end on a tiny chat model: the loss starts at ln 2 and falls, the saved model
loads and prefers the right answers, a killed run resumes exactly, LoRA, bad input, 2 processes."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from s2r.cli import main
from s2r.jsonl import read_jsonl, write_jsonl_atomic
from s2r.models.tiny import TinyModelConfig, run_tiny_model
from s2r.tasks import arith


def sample(p, text, grade, k):
    return {"benchmark": "arith", "id": p.id, "problem": p.problem, "gold": p.gold, "sample": k, "strategy": "single",
            "attempts": [{"answer": None, "grade": grade, "verdict": None, "reason": ""}], "tokens": 9,
            "truncated": False, "text": text}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny model with a chat template; per problem 4 samples, 1 right (the worked solution) and 3 wrong
    (other answers): 3 pairs each, difficulty 3/4; every other problem has its right sample twice (1/2)."""
    root = tmp_path_factory.mktemp("dpo")
    model = run_tiny_model(TinyModelConfig(str(root / "model"), seed=0, chat_template=True))
    records = []
    for i, p in enumerate(arith.generate("train", 6, seed=0)):
        n_right = 1 + i % 2
        records += [sample(p, arith.solution(p.problem), "correct", k) for k in range(n_right)]
        records += [sample(p, arith.guess_text(p.problem, int(p.gold) + d), "incorrect", n_right + d) for d in (1, 2, 3)]
    write_jsonl_atomic(root / "samples.jsonl", records)
    return root, str(model), str(root / "samples.jsonl")


def _dpo(tiny, out, *extra):
    root, model, data = tiny
    argv = ["dpo", data, "--model", model, "--out", str(root / out), "--batch-size", "6", "--micro-batch-size", "4",
            "--lr", "3e-3", "--warmup-ratio", "0", "--template", "chat", "--system", "", "--tensorboard", "false",
            "--threads", "1", "--ckpt-every", "1", *extra]
    assert main(argv) == 0
    return root / out


def _log(out):
    return list(read_jsonl(Path(out) / "log.jsonl"))


def test_dpo_lowers_the_loss_and_saves_a_model_that_prefers_right_answers(tiny):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = _dpo(tiny, "weighted", "--weighting", "difficulty", "--epochs", "4")
    log = _log(out)
    assert [r["step"] for r in log] == list(range(1, 13))  # 18 pairs / 6 per step × 4 epochs
    # step 1: the model is its reference, every margin is 0: loss = −log σ(0) = ln 2, no pair won yet
    assert log[0]["train/loss"] == pytest.approx(math.log(2), abs=1e-5) and log[0]["train/reward_acc"] == 0
    last = log[-4:]  # each step is a different batch: the last 4 together
    assert sum(r["train/loss"] for r in last) / 4 < math.log(2) - 0.1  # (seen: 0.50)
    assert sum(r["train/reward_acc"] for r in last) / 4 > 0.75  # (seen: 0.92)
    info = json.loads((out / "dpo.json").read_text())
    assert info["finished"] and info["pairs"] == 18
    # the saved model gives the right answer more of its probability than the start did
    from s2r.prompts import PromptConfig, messages_for, render_prompt
    from s2r.train.batching import collate, encode
    from s2r.train.dpo import sequence_logps

    tok = AutoTokenizer.from_pretrained(out / "model")
    p = next(arith.generate("train", 1, seed=0))
    prompt = render_prompt(messages_for(p.problem, PromptConfig(system="", template="chat")), PromptConfig(system="", template="chat"), tok)
    batch = collate([encode(tok, prompt, arith.solution(p.problem)), encode(tok, prompt, arith.guess_text(p.problem, int(p.gold) + 1))],
                    tok.pad_token_id)
    with torch.no_grad():
        after = sequence_logps(AutoModelForCausalLM.from_pretrained(out / "model"), batch)
        before = sequence_logps(AutoModelForCausalLM.from_pretrained(tiny[1]), batch)
    assert (after[0] - after[1]) - (before[0] - before[1]) > 1.0  # the margin the training grew


def test_resume_gives_the_losses_of_an_uninterrupted_run(tiny):
    whole = _log(_dpo(tiny, "whole", "--epochs", "2"))
    _dpo(tiny, "cut", "--epochs", "2", "--max-steps", "2")
    assert len(_log(tiny[0] / "cut")) == 2
    resumed = _log(_dpo(tiny, "cut", "--epochs", "2"))
    assert [r["train/loss"] for r in resumed] == pytest.approx([r["train/loss"] for r in whole], rel=1e-6)


def test_rerun_reuses_only_the_same_settings(tiny, capsys):
    out = _dpo(tiny, "again", "--epochs", "1")
    first = _log(out)
    capsys.readouterr()
    _dpo(tiny, "again", "--epochs", "1")
    assert "reusing the DPO model" in capsys.readouterr().err and _log(out) == first
    _dpo(tiny, "again", "--epochs", "1", "--beta", "0.5")  # another β: trained anew, not reused
    assert "reusing" not in capsys.readouterr().err
    assert json.loads((out / "dpo.json").read_text())["config"]["beta"] == 0.5 and _log(out)[-1] != first[-1]


def test_lora_reference_is_the_adapter_free_model(tiny):
    out = _dpo(tiny, "lora", "--lora-rank", "4", "--lora-alpha", "8", "--lr", "1e-2", "--epochs", "2")
    log = _log(out)
    assert log[0]["train/loss"] == pytest.approx(math.log(2), abs=1e-5)  # adapters start at 0: π = ref
    assert log[-1]["train/loss"] < log[0]["train/loss"] and (out / "adapter" / "adapter_config.json").exists()


def test_no_pair_is_a_one_line_error(tiny, tmp_path, capsys):
    root, model, _ = tiny
    p = next(arith.generate("train", 1, seed=0))
    data = tmp_path / "all_right.jsonl"
    write_jsonl_atomic(data, [sample(p, arith.solution(p.problem), "correct", k) for k in range(2)])
    assert main(["dpo", str(data), "--model", model, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"s2r dpo: error: {data}: no problem has both a right and a wrong sample: no pair to train on"
    assert main(["dpo", str(data), "--model", model, "--weighting", "hard"]) == 2
    assert "--weighting" in capsys.readouterr().err
    two = sample(p, "a retry", "correct", 2)
    write_jsonl_atomic(data, [{**two, "attempts": two["attempts"] * 2}])  # a trajectory, not a first attempt
    assert main(["dpo", str(data), "--model", model]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"s2r dpo: error: {data}: problem ") and "--pairs attempts" in err and "\n" not in err
    data.write_text('{"id": "x"}\n')  # not a trajectory record: the file and line, once
    assert main(["dpo", str(data), "--model", model]) == 2
    assert capsys.readouterr().err.strip() == f"s2r dpo: error: {data}:1: not a trajectory record: missing field 'attempts'"


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one(tiny, strategy):
    root, model, data = tiny
    one = _log(_dpo(tiny, "one", "--epochs", "1"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "s2r.cli", "dpo", data,
           "--model", model, "--out", str(root / f"two-{strategy}"), "--strategy", strategy, "--batch-size", "6", "--micro-batch-size", "4", "--lr", "3e-3",
           "--warmup-ratio", "0", "--template", "chat", "--system", "", "--tensorboard", "false", "--threads", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    two = _log(root / f"two-{strategy}")
    for key in ("train/loss", "train/reward_acc", "train/reward_margin"):
        assert [r[key] for r in two] == pytest.approx([r[key] for r in one], rel=1e-4, abs=1e-6), key
