"""`s2r rl` with tiny real models: tokens and parts, accumulation, the sign of the update, resume,
LoRA, ORL and PRL, and two processes."""

import copy
import json
import os
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from s2r.format import render
from s2r.jsonl import read_jsonl, write_jsonl_atomic
from s2r.models.tiny import (
    TinyModelConfig,
    build_tiny_model,
    char_tokenizer,
    run_tiny_model,
)
from s2r.tasks import arith
from s2r.tasks.arith.base import PHRASES
from s2r.train.advantages import AdvantageSettings
from s2r.train.batching import encode_parts, token_logprobs
from s2r.train.ppo import Rollout, batch_of, rl_accumulate, score_tokens
from s2r.train.rl import LIVE, RLConfig, grader_failures, make_rollouts, run_rl
from s2r.train.sft import SFTConfig, run_sft


def test_encode_parts_pinned():
    tok = char_tokenizer()
    ids, parts = encode_parts(tok, "Q:", "abcd", [(0, 1), (1, 4)])
    assert tok.convert_ids_to_tokens(ids) == ["Q", ":", "a", "b", "c", "d", "<eos>"]
    assert parts == [-1, -1, 0, 1, 1, 1, 1]  # the EOS belongs to the last action
    ids, parts = encode_parts(tok, "Q:", "abcd", [(0, 4)], add_eos=False)  # truncated: no EOS
    assert parts == [-1, -1, 0, 0, 0, 0]
    ids, parts = encode_parts(tok, "Q:", "abcd", [(0, 1), (1, 4)], skip=[(1, 3)])  # "bc" was written by the loop
    assert parts == [-1, -1, 0, -1, -1, 1, 1]


def _record(text, grades, truncated=False, reason="match"):
    return {"text": text, "truncated": truncated,
            "attempts": [{"grade": g, "reason": reason if g == "correct" else "mismatch"} for g in grades]}


def _trajectories() -> tuple[str, str, str]:
    """Rollouts of "Compute 91 / 7.": (wrong, rejected, right and accepted), (right and accepted),
    (wrong and rejected)."""
    p = "Compute 91 / 7."
    right, wrong = arith.solution(p), arith.guess_text(p, 12)
    fixed = render([wrong, right], [arith.confirmative_check(p, "12"), arith.confirmative_check(p, "13")])
    return fixed, render([right], [arith.confirmative_check(p, "13")]), render([wrong], [arith.confirmative_check(p, "12")])


def test_rollouts_carry_one_part_per_action_and_leave_out_grader_failures():
    tok = char_tokenizer()
    two, one, _ = _trajectories()
    records = [_record(two, ["incorrect", "correct"]), _record(one, ["correct"]),
               _record(one, ["correct"], reason="timeout after 2s"), _record(two, ["incorrect", "correct"])]
    rollouts, state, observed, left_out = make_rollouts(records, ["Q1", "Q2"], tok, "process", arith.DEFAULT_FORMAT, {},
                                                        AdvantageSettings(), samples=2)
    assert left_out == 1 and len(rollouts) == 2  # the second prompt's group had a grader timeout
    named = [dict(x, id=f"p{i // 2}", sample=i % 2, attempts=[dict(a, answer=str(i)) for a in x["attempts"]])
             for i, x in enumerate(records)]
    assert grader_failures(named) == [{"id": "p1", "sample": 0, "answer": "2", "reason": "timeout after 2s"}]
    r = rollouts[0]
    assert len(r.adv) == 4 and max(r.parts) == 3 and r.parts[-1] == 3 and r.ids[-1] == tok.eos_token_id
    # rewards: [−1, +1, +1, +1] (solve ✗, "incorrect" ✓, solve ✓, "correct" ✓); the group's second
    # rollout is [+1, +1]; batch baselines: b(R) = 0, b(R+V) = 1, b(R-V) = 1, b(R-V+R) = 1, b(R-V+R+V) = 1
    assert r.adv == [-1.0, 0.0, 0.0, 0.0] and rollouts[1].adv == [1.0, 0.0]
    assert [(x.get("rewards"), x.get("advantages"), x.get("trained")) for x in records] == [
        ([-1.0, 1.0, 1.0, 1.0], [-1.0, 0.0, 0.0, 0.0], True), ([1.0, 1.0], [1.0, 0.0], True), (None, None, None),
        (None, None, None)]  # what OUT/rollouts shows; the left-out group is not annotated
    assert observed["reward/outcome_mean"] == [1.0, 1.0] and observed["reward/verify_mean"] == [1.0, 1.0, 1.0]
    outcome, *_ = make_rollouts(records[:2], ["Q1"], tok, "outcome", arith.DEFAULT_FORMAT, {}, AdvantageSettings(), samples=2)
    assert [len(x.adv) for x in outcome] == [1, 1] and max(outcome[0].parts) == 0
    # a rollout the loop cut after its verdict (the model generated on) gets no EOS to train
    cut = [dict(records[0], stopped=False), dict(records[1], stopped=True)]
    a, b = make_rollouts(cut, ["Q1"], tok, "process", arith.DEFAULT_FORMAT, {}, AdvantageSettings(), samples=2)[0]
    assert a.ids[-1] != tok.eos_token_id and b.ids[-1] == tok.eos_token_id
    # a retry marker the loop wrote (the model stopped after "incorrect") is not trained; the rest is
    start = two.index(arith.DEFAULT_FORMAT.retry_marker) - 2
    end = start + len(arith.DEFAULT_FORMAT.retry_marker) + 3
    assert two[start:end] == f"\n\n{arith.DEFAULT_FORMAT.retry_marker}\n"
    forced = [dict(records[0], loop_markers=[[start, end, "eos"]]), records[1]]
    a_forced = make_rollouts(forced, ["Q1"], tok, "process", arith.DEFAULT_FORMAT, {}, AdvantageSettings(), samples=2)[0][0]
    untrained = [i for i, (p, q) in enumerate(zip(a.parts, a_forced.parts)) if p != q]
    assert len(untrained) == end - start and {a_forced.parts[i] for i in untrained} == {-1}  # one char per token


def test_mixed_only_trains_the_groups_whose_final_answers_differ():
    tok = char_tokenizer()
    fixed, one, failed = _trajectories()
    records = [_record(fixed, ["incorrect", "correct"]), _record(one, ["correct"]),  # both end right
               _record(failed, ["incorrect"]), _record(one, ["correct"])]  # one wrong, one right
    for level in ("outcome", "process"):
        every, _, _, _ = make_rollouts(records, ["Q1", "Q2"], tok, level, arith.DEFAULT_FORMAT, {}, AdvantageSettings(), 2)
        mixed, _, observed, _ = make_rollouts(records, ["Q1", "Q2"], tok, level, arith.DEFAULT_FORMAT, {},
                                              AdvantageSettings(), 2, mixed_only=True)
        assert [r.ids for r in mixed] == [r.ids for r in every[2:]] and [r.adv for r in mixed] == [r.adv for r in every[2:]]
        assert observed["reward/outcome_mean"] == [1.0, 1.0, -1.0, 1.0]  # the means still count every rollout
        assert observed["train/trained_frac"] == [0.0, 0.0, 1.0, 1.0]
        # what a uniform group holds: nothing under ORL (RLOO), a wrong first answer rightly rejected
        # and its fix under PRL, which is why the demo trains PRL on every group
        assert any(a != 0 for r in every[:2] for a in r.adv) == (level == "process")
    assert [r.adv for r in mixed] == [[-1.0, 0.0], [1.0, 0.0]]  # PRL: b(R) = 0, b(R-V) = 1, b(R+V) = 1


def _hand_rollouts(tok, n=5, seed=0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        text = "".join(rng.choice("0123456789+= \n") for _ in range(rng.randint(5, 14)))
        cut = rng.randint(1, len(text) - 1)
        ids, parts = encode_parts(tok, f"Q{i}:", text, [(0, cut), (cut, len(text))])
        out.append(Rollout(ids, parts, [rng.uniform(-1, 1), rng.uniform(-1, 1)],
                           old_logp=[rng.uniform(-5, -1) for _ in ids[1:]], ref_logp=[rng.uniform(-5, -1) for _ in ids[1:]]))
    return out


def _grads(model, micros, n_parts, n_tokens, cfg):
    model.zero_grad()
    rl_accumulate(model, micros, n_parts, n_tokens, cfg, pad_id=0)
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_uneven_micro_batches_give_the_gradient_of_one_batch():
    model, tok = build_tiny_model(TinyModelConfig("unused", seed=1))
    rollouts = _hand_rollouts(tok)
    cfg = RLConfig("unused", kl_estimator="k3", kl_coef=0.3, clip_eps=0.2)
    n_parts = sum(len(r.adv) for r in rollouts)
    n_tokens = sum(sum(p >= 0 for p in r.parts[1:]) for r in rollouts)
    whole = _grads(model, [rollouts], n_parts, n_tokens, cfg)
    split = _grads(model, [rollouts[:1], rollouts[1:4], rollouts[4:]], n_parts, n_tokens, cfg)
    assert whole.abs().sum() > 0 and torch.allclose(whole, split, atol=1e-6)


def test_k1_is_folded_into_each_parts_advantage():
    """β·Σ_{t∈p} k1_t is subtracted from A_p inside the step: the same gradient as advantages
    folded by hand with β = 0."""
    from s2r.train.advantages import fold_kl
    from s2r.train.losses import part_sums

    model, tok = build_tiny_model(TinyModelConfig("unused", seed=4))
    rollouts = _hand_rollouts(tok)
    n_parts = sum(len(r.adv) for r in rollouts)
    folded = []
    for r in rollouts:
        k1 = torch.tensor(r.old_logp) - torch.tensor(r.ref_logp)  # [T-1]
        adv = fold_kl(torch.tensor(r.adv), part_sums(k1, torch.tensor(r.parts[1:]), len(r.adv)), 0.3)
        folded.append(Rollout(r.ids, r.parts, adv.tolist(), old_logp=r.old_logp, ref_logp=r.ref_logp))
    inside = _grads(model, [rollouts[:2], rollouts[2:]], n_parts, 1, RLConfig("unused", kl_coef=0.3))
    by_hand = _grads(model, [folded[:2], folded[2:]], n_parts, 1, RLConfig("unused", kl_coef=0.0))
    assert inside.abs().sum() > 0 and torch.allclose(inside, by_hand, atol=1e-6)


def test_an_on_policy_step_reads_pi_old_off_its_own_forward():
    """Without old_logp (one step per iteration, no scoring pass) the step equals the one with
    old_logp scored by the same model before it, KL fold included."""
    model, tok = build_tiny_model(TinyModelConfig("unused", seed=5))
    ref, _ = build_tiny_model(TinyModelConfig("unused", seed=6))
    cfg = RLConfig("unused", kl_coef=0.3)
    scored, fresh = _hand_rollouts(tok), _hand_rollouts(tok)
    score_tokens(model, ref, scored, 2, 0, "cpu", None, cfg.temperature)
    score_tokens(model, ref, fresh, 2, 0, "cpu", None, cfg.temperature, old=False)
    assert fresh[0].old_logp is None and fresh[0].ref_logp == scored[0].ref_logp
    n_parts = sum(len(r.adv) for r in scored)
    with_old = _grads(model, [scored[:3], scored[3:]], n_parts, 1, cfg)
    without = _grads(model, [fresh[:3], fresh[3:]], n_parts, 1, cfg)
    assert with_old.abs().sum() > 0 and torch.allclose(with_old, without, atol=1e-6)


def test_offline_scoring_reads_the_reference_off_the_untrained_policy():
    """Offline RL's reference is the model that sampled: one forward (ref_is_old) fills old_logp and
    ref_logp with what a frozen copy of that model gives, and no other forward runs."""
    model, tok = build_tiny_model(TinyModelConfig("unused", seed=7))
    twin = copy.deepcopy(model)
    once, twice = _hand_rollouts(tok), _hand_rollouts(tok)
    calls = []
    hook = model.register_forward_hook(lambda *_: calls.append(1))
    score_tokens(model, None, once, 2, 0, "cpu", None, 0.7, ref_is_old=True)
    hook.remove()
    score_tokens(model, twin, twice, 2, 0, "cpu", None, 0.7)
    assert len(calls) == -(-len(once) // 2)  # one forward per micro-batch of 2
    for a, b in zip(once, twice):
        assert a.ref_logp == a.old_logp == b.old_logp == b.ref_logp and len(a.old_logp) == len(a.ids) - 1


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_higher_advantage_raises_the_log_probability(sign):
    """The reference code had this sign wrong: one step on A > 0 must make the sample more likely."""
    model, tok = build_tiny_model(TinyModelConfig("unused", seed=2))
    ids, parts = encode_parts(tok, "Q:", "12 + 3 = 15", [(0, 11)])
    r = Rollout(ids, parts, [sign])
    t = batch_of([r], 0, "cpu")
    with torch.no_grad():
        before = token_logprobs(model, t)[0, 1:].sum()  # the completion's tokens
    cfg = RLConfig("unused", kl_coef=0.0)  # log-probabilities at the sampling temperature, 0.7
    r.old_logp = token_logprobs(model, t, cfg.temperature)[0].detach().tolist()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    rl_accumulate(model, [[r]], 1, 1, cfg, pad_id=0)
    opt.step()
    with torch.no_grad():
        after = token_logprobs(model, t)[0, 1:].sum()
    assert (after - before) * sign > 1e-4


def test_log_probabilities_are_those_of_the_sampling_temperature():
    model, tok = build_tiny_model(TinyModelConfig("unused", seed=3))
    ids, parts = encode_parts(tok, "Q:", "91 / 7 = 13", [(0, 11)])
    t = batch_of([Rollout(ids, parts, [1.0])], 0, "cpu")
    with torch.no_grad():
        logits = model(input_ids=t["input_ids"]).logits[0]  # [T, V]
        for temperature in (1.0, 0.5):
            by_hand = [torch.softmax(logits[i] / temperature, -1)[ids[i + 1]].log() for i in range(len(ids) - 1)]
            assert torch.allclose(token_logprobs(model, t, temperature)[0], torch.stack(by_hand), atol=1e-5)


# ----------------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    """A tiny model taught the trajectory format by `s2r sft`: it solves arith problems (badly),
    checks its answers and retries, so sampled rollouts earn mixed rewards."""
    root = tmp_path_factory.mktemp("rl")
    start = run_tiny_model(TinyModelConfig(str(root / "start"), seed=0, phrases=PHRASES))
    rng = random.Random(0)
    records = []
    for p in arith.generate("train", 24, seed=0):  # few problems, many epochs: it half-memorises them
        text = arith.worked_trajectory(p.problem, rng)
        records.append({"problem": p.problem, "completion": text, "spans": [[0, len(text)]]})
    write_jsonl_atomic(root / "sft.jsonl", records)
    model = run_sft(SFTConfig(str(root / "sft.jsonl"), model=str(start), out=str(root / "sft"), epochs=40, batch_size=8,
                              lr=3e-3, kl_coef=0.0, system="", template="plain", tensorboard=False, threads=1))
    return root, str(model)


def _cfg(policy, out, **kw):
    root, model = policy
    base = dict(model=model, data=["arith:train"], limit=24, out=str(root / out), iterations=5, prompts=4, samples=3,
                max_tokens=240, updates=2, micro_batch_size=4, lr=2e-3, kl_coef=0.05, system="", template="plain",
                tensorboard=False, threads=1, ckpt_every=1, temperature=1.0, grader_timeout=30.0)  # no grader timeout on a busy machine
    return RLConfig(**{**base, **kw})


def _log(cfg):
    return list(read_jsonl(Path(cfg.out) / "log.jsonl"))


KEYS = ("train/loss", "train/clip_frac", "train/kl_ref", "reward/outcome_mean", "reward/solve_mean", "train/truncated")


def test_prl_logs_every_metric_and_resumes_exactly(policy):
    from transformers import AutoModelForCausalLM

    whole = _cfg(policy, "whole", save_rollouts=True)
    run_rl(whole)
    log = _log(whole)
    assert [r["iteration"] for r in log] == [1, 2, 3, 4, 5]
    saved = [list(read_jsonl(Path(whole.out) / "rollouts" / f"{i:06d}.jsonl")) for i in range(1, 6)]
    assert [len(x) for x in saved] == [12] * 5
    assert all(len(r["rewards"]) == len(r["advantages"]) >= 1 and r["trained"] for x in saved for r in x)
    for key in ("train/zero_adv_frac", "reward/verify_mean", *KEYS, *LIVE):
        assert key in log[-1], key
    assert all(r["rollouts"] == 12 for r in log)
    first = next(i for i, r in enumerate(log) if r["train/loss"] != 0)  # the first update that moved the policy
    assert first < 4 and all(r["train/kl_ref"] != 0 for r in log[first + 1 :])
    AutoModelForCausalLM.from_pretrained(Path(whole.out) / "model")
    assert json.loads((Path(whole.out) / "rl.json").read_text())["iterations"] == 5

    cut = _cfg(policy, "cut", iterations=3)
    run_rl(cut)
    with open(Path(cut.out) / "log.jsonl", "a") as f:
        f.write('{"iteration": 4, "train/lo')  # a torn line, as a kill leaves it
    run_rl(_cfg(policy, "cut"))
    resumed = _log(cut)
    assert [r["iteration"] for r in resumed] == [1, 2, 3, 4, 5]
    for a, b in zip(resumed, log):
        for key in KEYS:
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-9), key


def test_orl_with_k3_and_lora(policy):
    cfg = _cfg(policy, "orl", level="outcome", kl_estimator="k3", lora_rank=4, lora_alpha=8, iterations=2)
    run_rl(cfg)
    log = _log(cfg)
    assert len(log) == 2 and log[-1]["train/kl_ref"] is not None
    assert (Path(cfg.out) / "adapter" / "adapter_config.json").exists()


def test_rollouts_start_after_the_assistant_prefix_and_the_model_keeps_it(policy):
    """A model prompted with a prefix (mistake tuning's tag) is trained as it is evaluated."""
    cfg = _cfg(policy, "prefix", iterations=1, updates=1, save_rollouts=True, assistant_prefix="[Correct rationale]\n")
    run_rl(cfg)
    saved = list(read_jsonl(Path(cfg.out) / "rollouts" / "000001.jsonl"))
    assert saved and all(r["prompt"].endswith("Answer:\n[Correct rationale]\n") for r in saved)
    assert json.loads((Path(cfg.out) / "model" / "s2r.json").read_text())["assistant_prefix"] == "[Correct rationale]\n"


def test_later_epochs_reuse_the_rollouts_under_the_clip(policy):
    one = _cfg(policy, "epochs1", iterations=2, updates=1, lr=1e-2)
    three = _cfg(policy, "epochs3", iterations=2, updates=1, lr=1e-2, epochs=3)
    run_rl(one)
    run_rl(three)
    # one step per iteration starts at π_old: ratio 1, nothing clipped; the second and third passes
    # over the same rollouts see the moved policy, and the clip bounds them
    assert all(r["train/clip_frac"] == 0 for r in _log(one))
    assert any(r["train/clip_frac"] > 0 for r in _log(three))
    assert _log(one)[0]["reward/outcome_mean"] == _log(three)[0]["reward/outcome_mean"]  # the same first rollouts


def test_two_processes_run_one_iteration(policy):
    root, model = policy
    out = root / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "s2r.cli", "rl",
           model, "--data", "arith:train", "--limit", "100", "--out", str(out), "--iterations", "1", "--prompts", "4",
           "--samples", "2", "--max-tokens", "200", "--updates", "2", "--lr", "1e-3", "--system", "", "--template", "plain",
           "--tensorboard", "false", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "S2R_PROGRESS_SECONDS": "0"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (record,) = read_jsonl(out / "log.jsonl")
    assert record["rollouts"] == 8  # both processes' rollouts, gathered
    # progress off a terminal: plain lines, from the main process only
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("rl (process): 1/1")]
    assert f"loss {record['train/loss']:.3f}, reward {record['reward/outcome_mean'] or 0:.2f}, acc " in line
    assert done.stderr.count("rl (process): 0/1 iterations (0%)") == 1


def test_a_process_without_prompts_joins_with_weight_zero(policy):
    """One prompt per iteration on two processes: the second has no rollouts and joins every step's
    all-reduce with a borrowed rollout at weight 0, so the run equals a one-process run."""
    from safetensors.torch import load_file

    one = _cfg(policy, "one-process", prompts=1, samples=6, iterations=6, max_tokens=400)  # room for a retry
    run_rl(one)
    assert any(r["train/loss"] != 0 for r in _log(one))  # some update moved the policy
    root, model = policy
    out = root / "two-processes"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "s2r.cli", "rl",
           model, "--data", "arith:train", "--limit", "24", "--out", str(out), "--iterations", "6", "--prompts", "1",
           "--samples", "6", "--max-tokens", "400", "--updates", "2", "--micro-batch-size", "4", "--lr", "2e-3",
           "--kl-coef", "0.05", "--temperature", "1.0", "--system", "", "--template", "plain", "--tensorboard", "false",
           "--threads", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    two = list(read_jsonl(out / "log.jsonl"))
    assert [r["rollouts"] for r in two] == [6] * 6
    for a, b in zip(two, _log(one)):
        assert a["train/loss"] == pytest.approx(b["train/loss"], abs=1e-6)
    mine, theirs = load_file(Path(one.out) / "model" / "model.safetensors"), load_file(out / "model" / "model.safetensors")
    for name, t in mine.items():
        torch.testing.assert_close(theirs[name], t, rtol=1e-5, atol=1e-6)


def test_offline_selects_and_trains_on_given_rollouts(policy):
    """Rollouts already in the sample set are not sampled again (a resumed or a second run): hand-made
    ones here, so that selection sees positives and negatives; then the real model trains on them. The
    set holds a third problem too, which these runs (--limit 2) leave out."""
    from s2r.settings_guard import guard_output, model_digest
    from s2r.train.offline import OfflineConfig, rollout_settings, run_offline

    root, model = policy
    out = root / "offline"
    problems = list(arith.generate("train", 3, seed=0))
    rng = random.Random(1)
    rollouts = []
    for p in problems:
        for k in range(4):  # samples 0, 1 right at the first attempt; 2, 3 wrong throughout
            wrong = arith.solution(p.problem).replace(f"{{{p.gold}}}", f"{{{int(p.gold) + 1}}}")
            shown = arith.solution(p.problem) if k < 2 else wrong
            answer = p.gold if k < 2 else str(int(p.gold) + 1)
            text = render([shown], [arith.confirmative_check(p.problem, answer)])
            rollouts.append({"benchmark": "arith:train", **p.as_dict(), "sample": k, "strategy": "s2r",
                             "attempts": [{"answer": answer, "grade": "correct" if k < 2 else "incorrect",
                                           "verdict": None, "reason": "match" if k < 2 else "mismatch"}],
                             "tokens": 40, "truncated": False, "text": text})
    rng.shuffle(rollouts)
    out.mkdir()
    samples = root / "samples.jsonl"
    cfg = OfflineConfig(model, data=["arith:train"], limit=2, out=str(out), rollouts=str(samples), samples=4,
                        band=[0.1, 0.7], batch_size=3, micro_batch_size=2, lr=1e-3, system="", template="plain",
                        tensorboard=False, threads=1)
    # as a run with these settings would have left them (settings_guard)
    guard_output(samples, rollout_settings(cfg, arith.ArithTask()).record("s2r", model_digest(model)))
    write_jsonl_atomic(samples, rollouts)
    run_offline(cfg)
    dataset = list(read_jsonl(out / "dataset.jsonl"))
    assert len(dataset) == 8  # accuracy 0.5 per prompt; 2 positives and 2 negatives each
    assert sorted(d["rewards"] for d in dataset)[0] == [-1.0, 1.0]  # a wrong answer, correctly rejected
    log = list(read_jsonl(out / "log.jsonl"))
    assert len(log) == 3 and all(r["train/kl"] >= 0 for r in log) and log[-1]["train/kl"] > 0
    assert json.loads((out / "offline.json").read_text())["finished"]
    run_offline(cfg)  # a second run reuses everything
    assert len(list(read_jsonl(out / "log.jsonl"))) == 3
    # another run on the same sample set, every negative kept: nothing sampled, its own dataset
    before = samples.read_bytes()
    run_offline(replace(cfg, out=str(root / "offline-all"), balance=False, band=[0.0, 1.0], batch_size=8))
    assert samples.read_bytes() == before
    assert len(list(read_jsonl(root / "offline-all" / "dataset.jsonl"))) == 8
    assert not (root / "offline-all" / "rollouts.jsonl").exists()


def test_demo_rl_stage_wiring(policy, tmp_path, capsys):
    """The demo's RL stages on the fixture model: the model solves training problems after BI's, its
    hard ones become ORL's problems (PRL keeps all of them); ORL and PRL train, and offline RL, which
    finds no correct rollout to learn from on this model, is left out with a warning, not a failure."""
    from s2r.hard import hard_problems
    from s2r.demo import DemoConfig, hard_stage, rl_stage
    from s2r.models.backend import SamplingParams
    from s2r.loop import Settings
    from s2r.tasks.arith.base import PLAIN

    cfg = DemoConfig(out=str(tmp_path), quick=True, rl_iterations=1, rl_prompts=2, offline_problems=2, max_tokens=120,
                     batch_size=16, bi_problems=20, screen_problems=8)
    s2r = Settings(max_tokens=120, params=SamplingParams(max_tokens=120, seed=0), prompt=PLAIN)
    hard = hard_stage(cfg, Path(policy[1]), s2r, tmp_path)
    screened = list(read_jsonl(tmp_path / "rl" / "screen.jsonl"))
    assert [r["problem"] for r in screened] == [p.problem for p in list(arith.generate("train", 28, seed=0))[20:]]
    expected = hard_problems(screened, min_attempts=3)[0]
    assert expected and list(read_jsonl(hard)) == expected  # this weak model gets most of them wrong
    models = rl_stage(cfg, Path(policy[1]), hard, tmp_path)
    assert sorted(models) in (["orl", "prl"], ["offline", "orl", "prl"])
    for name, data, beta in (("orl", [str(hard)], 0.01), ("prl", ["arith:train:0"], 0.05)):
        assert (tmp_path / "rl" / name / "model" / "config.json").exists()
        assert len(list(read_jsonl(tmp_path / "rl" / name / "log.jsonl"))) == 1
        assert len(list(read_jsonl(tmp_path / "rl" / name / "rollouts" / "000001.jsonl"))) == 2 * 4  # prompts × 4
        config = json.loads((tmp_path / "rl" / name / "rl.json").read_text())["config"]
        assert config["data"] == data and config["kl_coef"] == beta
    if "offline" not in models:
        assert "the offline row is left out" in capsys.readouterr().err
    # offline RL sampled the problems the demo asked for (the recipe's limit when it does not ask), × 8
    assert len(list(read_jsonl(tmp_path / "rl" / "offline" / "rollouts.jsonl"))) == 2 * 8
