"""`s2r score` (SCoRe): the pure pieces by hand, the per-part KL fold, and runs end to end through
the CLI on the shipped arith base model (stage 1, resume, reuse, stage 2) and on a tiny chat model."""

import json
import random
from pathlib import Path

import pytest
import torch

from s2r.cli import main
from s2r.jsonl import read_jsonl
from s2r.methods.score import INSTRUCTION
from s2r.models.tiny import TinyModelConfig, build_tiny_model, run_tiny_model
from s2r.train.batching import encode_parts
from s2r.train.ppo import PolicyLoss, PolicyStats, Rollout, part_kl_coefs, rl_accumulate
from s2r.train.score import ScoreConfig, attempt_kl, group_advantages, rewards_of, two_turn_text

BASE = Path(__file__).resolve().parents[1] / "src" / "s2r" / "assets" / "base-seed0" / "model"


def test_two_turn_text_by_hand():
    text, spans, skip = two_turn_text("Q\n", "Q\nab\n\nFix?\n", "ab", "c")
    assert (text, spans, skip) == ("ab\n\nFix?\nc", [(0, 2), (2, 10)], [(2, 9)])
    assert text[slice(*spans[0])] == "ab" and text[slice(*skip[0])] == "\n\nFix?\n"
    with pytest.raises(ValueError, match="first turn"):
        two_turn_text("Q\n", "Q\nxy\n\nFix?\n", "ab", "c")


def test_rewards_and_advantages_by_hand():
    graded = [{"grade": "incorrect", "reason": "mismatch"}, {"grade": "correct", "reason": "match"}]
    assert rewards_of({"attempts": graded}) == (-1.0, 1.0) and rewards_of({"attempts": graded[::-1]}) == (1.0, -1.0)
    assert rewards_of({"attempts": [graded[0], {"grade": "unverifiable", "reason": "timeout after 2s"}]}) is None
    # stage 1: G = r2; the failed rollout is left out and RLOO runs over the other two (K − 1 = 1)
    assert group_advantages([[(-1, 1), None, (1, -1)]], 1, 10.0) == [[(2.0, 2.0), None, (-2.0, -2.0)]]
    # stage 2, α = 10: G = (20, 21) and (2, 1) -> A1 = ±18, A2 = ±20; a lone rollout has no baseline
    assert group_advantages([[(-1, 1), (1, 1)], [(1, 1), None]], 2, 10.0) == [[(18.0, 20.0), (-18.0, -20.0)], [None, None]]


def test_attempt_kl_by_hand():
    r = Rollout([5, 6, 7, 8], [-1, 0, 0, 1], [0.0, 0.0], old_logp=[-1.0, -1.0, -2.0], ref_logp=[-2.0, -1.5, -2.0])
    assert attempt_kl([r, Rollout([5, 6], [-1, 0], [0.0])]) == [1.5, 2, 0.0, 1]


def test_config_kl_weights_and_policy_stats():
    assert ScoreConfig("m", beta1=0.01).kl_betas == pytest.approx((0.1, 0.01))
    assert ScoreConfig("m", stage=2, beta1=0.01, beta2=0.5).kl_betas == (0.01, 0.01)
    assert ScoreConfig("m", beta1=0.0, beta2=0.3).kl_coef == 0.3  # a reference is loaded
    with pytest.raises(ValueError, match="stage"):
        ScoreConfig("m", stage=3).check()
    two = Rollout([1, 2, 3], [-1, 0, 1], [1.0, 2.0], kl=[0.5, 0.05])
    assert part_kl_coefs([two, Rollout([1, 2], [-1, 0], [1.0])], 0.1) == [0.5, 0.05, 0.1]
    with pytest.raises(ValueError, match="2 parts but 1"):
        part_kl_coefs([Rollout([1, 2, 3], [-1, 0, 1], [1.0, 2.0], kl=[0.5])], 0.1)
    total = PolicyStats(1.0, 2.0, 3.0, 4.0, 8.0) + PolicyStats(1.0, 0.0, 1.0, 0.0, 2.0)
    assert total == PolicyStats(2.0, 2.0, 4.0, 4.0, 10.0) and total.kl_ref == 0.4 and PolicyStats().kl_ref is None

    class OneProcess:  # Distributed.sum of a single process
        def sum(self, values):
            return values

    assert total.summed(OneProcess()) == total


def test_stage1_weights_fold_beta2_into_attempt1_and_beta1_into_attempt2():
    """With kl [β2, β1] per rollout the step equals advantages folded by hand, A1 − β2 Σk1 and
    A2 − β1 Σk1, with no KL in the step."""
    from s2r.train.advantages import fold_kl
    from s2r.train.losses import part_sums

    model, tok = build_tiny_model(TinyModelConfig("unused", seed=7))
    rng = random.Random(0)
    beta1, beta2 = ScoreConfig("m", beta1=0.05).kl_betas[::-1]
    assert (beta1, beta2) == pytest.approx((0.05, 0.5))
    inside, by_hand = [], []
    for i in range(4):
        ids, parts = encode_parts(tok, f"Q{i}:", "12 = 3\nfix?\n4 = 4", [(0, 6), (6, 17)], skip=[(6, 12)])
        old, ref = [rng.uniform(-5, -1) for _ in ids[1:]], [rng.uniform(-5, -1) for _ in ids[1:]]
        adv = [rng.uniform(-1, 1), rng.uniform(-1, 1)]
        inside.append(Rollout(ids, parts, adv, old_logp=old, ref_logp=ref, kl=[beta2, beta1]))
        k1 = part_sums(torch.tensor(old) - torch.tensor(ref), torch.tensor(parts[1:]), 2)  # [2]
        folded = [fold_kl(torch.tensor(adv[0]), k1[0], beta2).item(), fold_kl(torch.tensor(adv[1]), k1[1], beta1).item()]
        by_hand.append(Rollout(ids, parts, folded, old_logp=old, ref_logp=ref))

    def grads(rollouts, loss):
        model.zero_grad()
        rl_accumulate(model, [rollouts[:3], rollouts[3:]], 8, 1, loss, pad_id=0)
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    a = grads(inside, PolicyLoss(kl_coef=0.3))  # the rollouts' own β, not this one
    b = grads(by_hand, PolicyLoss(kl_coef=0.0))
    assert a.abs().sum() > 0 and torch.allclose(a, b, atol=1e-6)


# ----------------------------------------------------------------------------------- runs

ARGS = ["--data", "arith:train", "--limit", "40", "--prompts", "4", "--samples", "2", "--max-tokens", "60",
        "--lr", "5e-5", "--tensorboard", "false", "--threads", "1", "--micro-batch-size", "4"]
KEYS = ("iteration", "train/loss", "train/clip_frac", "train/kl_ref", "train/kl_ref_attempt1", "train/kl_ref_attempt2",
        "reward/attempt1", "reward/attempt2", "eval/acc_first", "eval/acc_final", "eval/i2c", "eval/c2i", "count/i2c",
        "count/c2i", "train/answered", "rollouts", "rollouts_left_out", "grader_failures", "tokens", "gen_seconds", "seconds")


def test_stage1_resumes_and_is_reused_then_stage2_keeps_the_base_as_reference(tmp_path, capsys, monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("S2R_PROGRESS_SECONDS", "0")
    one = tmp_path / "stage1"
    assert main(["score", str(BASE), "--stage", "1", "--out", str(one), "--iterations", "1", *ARGS]) == 0
    assert main(["score", str(BASE), "--stage", "1", "--out", str(one), "--iterations", "2", "--save-rollouts",
                 "true", *ARGS]) == 0
    assert "resuming score (stage 1) at iteration 1 of 2" in capsys.readouterr().err
    log = list(read_jsonl(one / "log.jsonl"))
    assert [r["iteration"] for r in log] == [1, 2]
    for key in KEYS:
        assert key in log[-1], key
    assert all(r["rollouts"] == 8 and r["rollouts_left_out"] == 0 for r in log)
    assert log[-1]["train/kl_ref_attempt1"] is not None and log[-1]["train/kl_ref"] != 0
    (saved,) = [list(read_jsonl(one / "rollouts" / "000002.jsonl"))]
    assert len(saved) == 8 and all(r["strategy"] == "intrinsic" and len(r["attempts"]) == 2 for r in saved)
    assert all(len(r["rewards"]) == len(r["advantages"]) == 2 for r in saved)
    AutoModelForCausalLM.from_pretrained(one / "model")
    assert json.loads((one / "model" / "s2r.json").read_text())["template"] == "plain"  # from the base model's
    assert main(["score", str(BASE), "--stage", "1", "--out", str(one), "--iterations", "2", *ARGS]) == 0
    assert "reusing the SCoRe model" in capsys.readouterr().err

    two = tmp_path / "stage2"
    assert main(["score", str(one / "model"), "--stage", "2", "--ref-model", str(BASE), "--out", str(two),
                 "--iterations", "2", *ARGS]) == 0
    log2 = list(read_jsonl(two / "log.jsonl"))
    assert [r["iteration"] for r in log2] == [1, 2] and all(k in log2[0] for k in KEYS)
    # the reference is the base, not the stage-1 model: attempt 1 starts away from it (k1 ≠ 0)
    assert log2[0]["train/kl_ref_attempt1"] != 0
    config = json.loads((two / "score.json").read_text())["config"]
    assert (config["stage"], config["ref_model"], config["review_prompt"]) == (2, str(BASE), INSTRUCTION)
    AutoModelForCausalLM.from_pretrained(two / "model")


def test_a_chat_model_on_a_math_benchmark(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("S2R_PROGRESS_SECONDS", "0")
    model = run_tiny_model(TinyModelConfig(str(tmp_path / "chat"), chat_template=True, seed=0))
    out = tmp_path / "score"
    assert main(["score", str(model), "--data", "gsm8k:train", "--limit", "4", "--data-dir", str(data_dir), "--out",
                 str(out), "--iterations", "1", "--prompts", "2", "--samples", "2", "--max-tokens", "16",
                 "--tensorboard", "false", "--threads", "1", "--save-rollouts", "true"]) == 0
    (record,) = read_jsonl(out / "log.jsonl")
    assert record["rollouts"] == 4 and record["reward/attempt2"] == -1.0  # a random model answers nothing
    rollouts = list(read_jsonl(out / "rollouts" / "000001.jsonl"))
    assert all(r["answered"] is False and r["rewards"] == [-1.0, -1.0] for r in rollouts)
    assert record["train/answered"] == 0.0
    assert (out / "model" / "config.json").exists()


def test_rollout_tokens_train_both_attempts_and_not_the_instruction():
    from s2r.models.tiny import char_tokenizer
    from s2r.train.score import make_rollouts

    tok = char_tokenizer()
    right, wrong = {"grade": "correct", "reason": "match"}, {"grade": "incorrect", "reason": "mismatch"}
    records = [{"attempts": [wrong, right], "first_text": "ab", "second_text": "c", "stopped": True},
               {"attempts": [right, right], "first_text": "d", "second_text": "e", "stopped": False}]
    turns = [(None, None, "Q\nab\nFix?\n", None), (None, None, "Q\nd\nFix?\n", None)]
    rollouts, left_out = make_rollouts(records, turns, ["Q\n"], tok, ScoreConfig("m", stage=1, beta1=0.05), 2)
    assert left_out == 0 and [r.adv for r in rollouts] == [[0.0, 0.0], [0.0, 0.0]]  # stage 1: G = r2 = 1 for both
    first = rollouts[0]
    assert tok.convert_ids_to_tokens(first.ids) == ["Q", "\n", "a", "b", "\n", "F", "i", "x", "?", "\n", "c", "<eos>"]
    assert first.parts == [-1, -1, 0, 0, -1, -1, -1, -1, -1, -1, 1, 1]
    assert first.kl == pytest.approx([0.5, 0.05]) and records[0]["rewards"] == [-1.0, 1.0]
    assert rollouts[1].parts[-1] == 1 and rollouts[1].ids[-1] != tok.eos_token_id  # not stopped: no EOS trained
