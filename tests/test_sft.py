"""SFT: the KL-SFT loss by hand, gradient accumulation invariance, exact resume, 2 processes, LoRA."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from s2r.jsonl import read_jsonl, write_jsonl_atomic
from s2r.models.tiny import TinyModelConfig, build_tiny_model, run_tiny_model
from s2r.tasks import arith
from s2r.train.losses import kl_sft_loss
from s2r.train.sft import SFTConfig, accumulate, batch_order, lr_at, micro_batches, run_sft


def test_kl_sft_loss_by_hand():
    # 3 positions, vocabulary of 4 words; π_ref uniform; the third position is masked out.
    p = torch.tensor([[[0.5, 0.25, 0.125, 0.125], [0.25, 0.25, 0.25, 0.25], [0.4, 0.4, 0.1, 0.1]]])
    ref = torch.full((1, 3, 4), 0.25)
    targets = torch.tensor([[0, 1, 2]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    loss, nll, kl = kl_sft_loss(p.log(), ref.log(), targets, mask, kl_coef=0.1)
    # NLL: (−ln 0.5 − ln 0.25) / 2 = (0.693147 + 1.386294) / 2 = 1.039721
    # KL_1 = 0.5 ln(0.5/0.25) + 0.25 ln 1 + 2 · 0.125 ln(0.125/0.25) = 0.5 ln 2 − 0.25 ln 2 = 0.173287; KL_2 = 0
    # KL mean = 0.086643; loss = 1.039721 + 0.1 · 0.086643 = 1.048385
    assert nll.item() == pytest.approx(1.039721, abs=1e-6)
    assert kl.item() == pytest.approx(0.25 * math.log(2) / 2, abs=1e-6)
    assert loss.item() == pytest.approx(1.048385, abs=1e-6)


def test_no_reference_means_no_kl():
    logits = torch.randn(2, 3, 4)
    loss, nll, kl = kl_sft_loss(logits, None, torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3), kl_coef=0.5)
    assert kl.item() == 0 and loss.item() == pytest.approx(nll.item())


def _examples(n=6):
    rng = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        length = 5 + 3 * i
        ids = torch.randint(4, 100, (length,), generator=rng).tolist()
        mask = [0] * 3 + [int(t % 3 != 0) for t in range(length - 3)]
        out.append((ids, mask))
    return out


def _grads(model, ref, micros, n_tokens):
    model.zero_grad(set_to_none=True)
    sums = accumulate(model, model, ref, micros, n_tokens, kl_coef=0.1)
    return sums, [p.grad.clone() for p in model.parameters()]


def test_uneven_micro_batches_give_the_gradient_of_one_batch():
    model, _ = build_tiny_model(TinyModelConfig("unused", seed=0))
    ref, _ = build_tiny_model(TinyModelConfig("unused", seed=1))  # a different reference: KL ≠ 0
    ex = _examples()
    n_tokens = sum(sum(m[1:]) for _, m in ex)
    sums_one, g_one = _grads(model, ref, [ex], n_tokens)
    sums_acc, g_acc = _grads(model, ref, [ex[:1], ex[1:3], ex[3:]], n_tokens)
    assert sums_one[1] > 0
    assert sums_acc == pytest.approx(sums_one, rel=1e-5)
    for a, b in zip(g_one, g_acc):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_batch_order_and_micro_batches():
    steps = batch_order(5, 2, 2, seed=0)
    assert [len(b) for b in steps] == [2, 2, 1, 2, 2, 1]
    assert sorted(steps[0] + steps[1] + steps[2]) == list(range(5)) == sorted(steps[3] + steps[4] + steps[5])
    assert steps == batch_order(5, 2, 2, seed=0) and steps != batch_order(5, 2, 2, seed=1)
    ex = [([1] * n, [1] * n) for n in (5, 1, 4, 2, 3)]
    assert [[len(e[0]) for e in mb] for mb in micro_batches(ex, 0, 1, 2)] == [[1, 2], [3, 4], [5]]
    assert [[len(e[0]) for e in mb] for mb in micro_batches(ex, 1, 2, 8)] == [[1, 2]]  # examples 1 and 3


def test_schedule_warms_up_then_decays():
    cfg = SFTConfig("d", "m", lr=1.0, warmup_ratio=0.1, min_lr_ratio=0.1)
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] == pytest.approx(0.1, abs=1e-3)


# ----------------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    model = run_tiny_model(TinyModelConfig(str(root / "model"), seed=0))
    records = []
    for p in arith.generate("train", 12, seed=0):
        completion = arith.solution(p.problem)
        records.append({"problem": p.problem, "completion": completion, "spans": [[0, len(completion)]]})
    data = root / "sft.jsonl"
    write_jsonl_atomic(data, records)
    return root, str(model), str(data)


def _cfg(tiny, out, **kw):
    root, model, data = tiny
    base = dict(data=data, model=model, out=str(root / out), epochs=2, batch_size=4, micro_batch_size=3, lr=1e-3,
                kl_coef=0.1, ckpt_every=1, system="", template="plain", tensorboard=False, threads=1)
    return SFTConfig(**{**base, **kw})


def _losses(path):
    """[step, loss, kl, step, loss, kl, ...] of a run's log."""
    return [v for r in read_jsonl(Path(path) / "log.jsonl") for v in (r["step"], r["train/loss"], r["train/kl"])]


def test_sft_lowers_the_loss_and_saves_a_loadable_model(tiny):
    from transformers import AutoModelForCausalLM

    cfg = _cfg(tiny, "plain", epochs=6)
    model_dir = run_sft(cfg)
    steps, losses, kls = (_losses(cfg.out)[i::3] for i in range(3))
    assert steps == list(range(1, 19))  # 12 records / 4 per step × 6 epochs
    assert losses[-1] < losses[0] - 0.5
    assert kls[0] == pytest.approx(0, abs=1e-6) and kls[-1] > 0  # the KL starts at 0, then grows
    AutoModelForCausalLM.from_pretrained(model_dir)
    info = json.loads((Path(cfg.out) / "sft.json").read_text())
    assert info["finished"] and info["steps"] == 18


def test_resume_gives_the_losses_of_an_uninterrupted_run(tiny):
    whole = _cfg(tiny, "whole")
    run_sft(whole)
    cut = _cfg(tiny, "cut", max_steps=3)
    run_sft(cut)
    assert len(_losses(cut.out)) == 3 * 3
    with open(Path(cut.out) / "log.jsonl", "a") as f:
        f.write('{"step": 4, "train/lo')  # a torn line, as a kill leaves it
    run_sft(_cfg(tiny, "cut"))
    assert _losses(cut.out) == pytest.approx(_losses(whole.out), rel=1e-6)


def test_lora_trains_adapters_and_saves_merged_weights(tiny):
    from transformers import AutoModelForCausalLM

    cfg = _cfg(tiny, "lora", lora_rank=4, lora_alpha=8, epochs=1, lr=1e-2)
    run_sft(cfg)
    assert (Path(cfg.out) / "adapter" / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(Path(cfg.out) / "model")
    start = AutoModelForCausalLM.from_pretrained(tiny[1])
    assert not torch.equal(merged.model.layers[0].self_attn.q_proj.weight, start.model.layers[0].self_attn.q_proj.weight)
    assert _losses(cfg.out)[-1] > 0  # KL to the adapter-free model


def test_two_processes_match_one(tiny):
    one = _cfg(tiny, "one", epochs=1)
    run_sft(one)
    two = Path(tiny[0]) / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "s2r.cli", "sft",
           one.data, "--model", one.model, "--out", str(two), "--epochs", "1", "--batch-size", "4", "--micro-batch-size", "3",
           "--lr", "1e-3", "--kl-coef", "0.1", "--system", "", "--template", "plain", "--tensorboard", "false", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _losses(two) == pytest.approx(_losses(one.out), rel=1e-4)
