"""`--strategy fsdp` (train/sharding.py) on 2 CPU processes (gloo): the same losses and weights as
one process or DDP, half the parameter and optimiser bytes per process, exact resume after a
kill, and LoRA's adapter-disabled reference."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from s2r.format import render
from s2r.jsonl import read_jsonl, write_jsonl_atomic
from s2r.tasks import arith

BASE = str(Path(__file__).resolve().parents[1] / "src" / "s2r" / "assets" / "base-seed0" / "model")
COMMON = {"system": "", "template": "plain", "tensorboard": False, "threads": 1}


def _flags(cfg: dict) -> list[str]:
    out = []
    for k, v in cfg.items():
        out.append("--" + k.replace("_", "-"))
        out += [str(x) for x in v] if isinstance(v, list) else [str(v).lower() if isinstance(v, bool) else str(v)]
    return out


def _cmd(command: str, positional: str, cfg: dict, processes: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), "-m", "s2r.cli",
            command, positional, *_flags({**COMMON, **cfg})]


def _run(command: str, positional: str, cfg: dict) -> subprocess.CompletedProcess:
    done = subprocess.run(_cmd(command, positional, cfg), capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _log(out) -> list[dict]:
    return list(read_jsonl(Path(out) / "log.jsonl"))


def _same_logs(a: list[dict], b: list[dict], keys) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        for k in keys:
            assert x[k] == pytest.approx(y[k], rel=1e-4, abs=1e-7), k


def _greedy(model_dir) -> list[str]:
    from s2r.models.backend import SamplingParams
    from s2r.models.hf import TransformersBackend

    backend = TransformersBackend.from_pretrained(str(model_dir), device="cpu")
    prompts = [p.problem + "\n" for p in arith.generate("test", 6, seed=0)]
    return [c.text for c in backend.complete(prompts, SamplingParams(max_tokens=24))]


def _weights(model_dir) -> dict:
    from safetensors.torch import load_file

    return load_file(Path(model_dir) / "model.safetensors")


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    records = []
    for p in arith.generate("train", 12, seed=0):
        completion = arith.solution(p.problem)
        records.append({"problem": p.problem, "completion": completion, "spans": [[0, len(completion)]]})
    write_jsonl_atomic(root / "sft.jsonl", records)
    return root, str(root / "sft.jsonl")


# 12 records in steps of 5, 5, 2: in micro-batches of 2, the processes' shares of 3 and 2 records
# make 2 and 1 micro-batches, so the second process runs a zero-weight one in lockstep
SFT = {"model": BASE, "epochs": 2, "batch_size": 5, "micro_batch_size": 2, "lr": 1e-3, "kl_coef": 0.1, "ckpt_every": 1}
SFT_KEYS = ("train/loss", "train/nll", "train/kl", "grad_norm")


def test_sft_fsdp_matches_one_process_with_half_the_bytes(sft_data):
    from s2r.train.sft import SFTConfig, run_sft

    root, data = sft_data
    one = run_sft(SFTConfig(data, out=str(root / "one"), **SFT, **COMMON))
    checkpointed = run_sft(SFTConfig(data, out=str(root / "checkpointed"), gradient_checkpointing=True, **SFT, **COMMON))
    _same_logs(_log(checkpointed.parent), _log(root / "one"), SFT_KEYS)
    _run("sft", data, {**SFT, "out": str(root / "fsdp"), "strategy": "fsdp"})
    _run("sft", data, {**SFT, "out": str(root / "ddp"), "strategy": "ddp"})
    _same_logs(_log(root / "fsdp"), _log(root / "one"), SFT_KEYS)
    assert _log(root / "one")[-1]["train/kl"] > 0
    assert _greedy(root / "fsdp" / "model") == _greedy(one)
    for name, t in _weights(one).items():
        torch.testing.assert_close(_weights(root / "fsdp" / "model")[name], t, rtol=1e-4, atol=1e-4)
    fsdp, ddp = (json.loads((root / s / "sft.json").read_text())["memory"] for s in ("fsdp", "ddp"))
    print(f"bytes per process, 2 processes: fsdp {fsdp}, ddp {ddp}")
    for k in ("param_bytes", "optimizer_bytes"):
        assert fsdp[k] <= 0.6 * ddp[k]


def test_accelerate_launch_shards_the_same_way(sft_data):
    """`accelerate launch` starts the processes (its own environment); s2r shards as under torchrun."""
    from s2r.train.sft import SFTConfig, run_sft

    root, data = sft_data
    run_sft(SFTConfig(data, out=str(root / "acc-one"), **{**SFT, "epochs": 1}, **COMMON))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "s2r.cli", "sft", data,
           *_flags({**COMMON, **SFT, "epochs": 1, "out": str(root / "acc"), "strategy": "fsdp"})]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    _same_logs(_log(root / "acc"), _log(root / "acc-one"), SFT_KEYS)
    two, one = (json.loads((root / s / "sft.json").read_text())["memory"] for s in ("acc", "acc-one"))
    assert two["param_bytes"] <= 0.6 * one["param_bytes"]  # two processes, each with half


def _children(pid: int) -> list[int]:
    """Ids of the processes whose parent is pid (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):  # a process that ended meanwhile
            continue
    return out


def test_a_killed_fsdp_run_resumes_exactly(sft_data):
    root, data = sft_data
    whole = {**SFT, "epochs": 4, "out": str(root / "whole"), "strategy": "fsdp"}  # 12 steps
    _run("sft", data, whole)
    cut = {**whole, "out": str(root / "cut")}
    launcher = subprocess.Popen(_cmd("sft", data, cut), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    latest = root / "cut" / "ckpt" / "latest"
    deadline = time.monotonic() + 300
    while not (latest.exists() and int(latest.read_text()) >= 1) and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in [launcher.pid, *_children(launcher.pid)]:  # the workers run in sessions of their own
        os.kill(pid, signal.SIGKILL)
    launcher.wait()
    assert 2 <= len(_log(root / "cut")) < 12 and not (root / "cut" / "sft.json").exists()
    done = _run("sft", data, cut)
    assert "resuming sft at step" in done.stderr
    _same_logs(_log(root / "cut"), _log(root / "whole"), SFT_KEYS)
    for name, t in _weights(root / "whole" / "model").items():
        torch.testing.assert_close(_weights(root / "cut" / "model")[name], t, rtol=1e-6, atol=1e-7)


def test_lora_fsdp_matches_one_process(sft_data):
    from s2r.train.sft import SFTConfig, run_sft

    root, data = sft_data
    lora = {**SFT, "epochs": 1, "lora_rank": 4, "lora_alpha": 8, "lr": 1e-2}
    one = run_sft(SFTConfig(data, out=str(root / "lora-one"), **lora, **COMMON))
    _run("sft", data, {**lora, "out": str(root / "lora-fsdp"), "strategy": "fsdp"})
    _same_logs(_log(root / "lora-fsdp"), _log(root / "lora-one"), SFT_KEYS)
    assert (root / "lora-fsdp" / "adapter" / "adapter_config.json").exists()
    assert _greedy(root / "lora-fsdp" / "model") == _greedy(one)


def test_lora_reference_without_adapters_gives_the_kl_of_a_copy(sft_data):
    """The sharded LoRA model with its adapters disabled is the reference: the KL it gives equals
    the KL to an explicit, separately sharded copy of the starting model."""
    from transformers import AutoModelForCausalLM

    from s2r.train.common import Distributed, load_policy
    from s2r.train.sft import SFTConfig, accumulate, encode_records, read_records
    from s2r.train.sharding import shard

    root, data = sft_data
    cfg = SFTConfig(data, model=BASE, lora_rank=4, lora_alpha=8, kl_coef=0.1, strategy="fsdp", **COMMON)
    dist_ = Distributed("cpu", group=True)
    try:
        torch.manual_seed(0)
        model = load_policy(cfg, "cpu")
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:  # adapters start at zero: move them, so the policy differs from the reference
                    p.normal_(0, 0.05)
        shard(model, dist_.device, 1, bf16=False)
        copy = shard(AutoModelForCausalLM.from_pretrained(BASE).eval().requires_grad_(False), dist_.device, 1, bf16=False)
        from transformers import AutoTokenizer

        examples, _ = encode_records(data, read_records(data), AutoTokenizer.from_pretrained(BASE), cfg)
        n = sum(sum(m[1:]) for _, m in examples)
        _, kl_disabled = accumulate(model, model, None, [examples[:6], examples[6:]], n, 0.1)
        _, kl_copy = accumulate(model, model, copy, [examples[:6], examples[6:]], n, 0.1)
    finally:
        dist_.close()
    assert kl_disabled > 1e-3
    assert kl_disabled == pytest.approx(kl_copy, rel=1e-5)


# ----------------------------------------------------------------------------------- rl and offline


RL = {"data": ["arith:train"], "limit": 24, "iterations": 2, "prompts": 3, "samples": 2, "max_tokens": 120, "updates": 2,
      "micro_batch_size": 2, "lr": 1e-3, "kl_coef": 0.05, "temperature": 1.0}
RL_KEYS = ("train/loss", "train/kl_ref", "reward/outcome_mean", "tokens")


@pytest.mark.parametrize("level", ["outcome", "process"])
def test_rl_fsdp_matches_ddp(tmp_path, level):
    """The processes' rollouts differ in length (3 prompts on 2 processes, sampled): generation runs
    on gathered weights; the updates in lockstep."""
    for strategy in ("ddp", "fsdp"):
        _run("rl", BASE, {**RL, "level": level, "out": str(tmp_path / strategy), "strategy": strategy})
    _same_logs(_log(tmp_path / "fsdp"), _log(tmp_path / "ddp"), RL_KEYS)
    assert any(r["train/loss"] != 0 for r in _log(tmp_path / "ddp"))
    assert _greedy(tmp_path / "fsdp" / "model") == _greedy(tmp_path / "ddp" / "model")


def _offline_rollouts() -> list[dict]:
    """Two prompts × 4 rollouts: samples 0, 1 right at the first attempt (and checked), 2, 3 wrong."""
    out = []
    for p in arith.generate("train", 2, seed=0):
        wrong = str(int(p.gold) + 1)
        for k in range(4):
            answer = p.gold if k < 2 else wrong
            shown = arith.solution(p.problem).replace(f"{{{p.gold}}}", f"{{{answer}}}")
            out.append({"benchmark": "arith:train", **p.as_dict(), "sample": k, "strategy": "s2r",
                        "attempts": [{"answer": answer, "grade": "correct" if k < 2 else "incorrect", "verdict": None,
                                      "reason": "match" if k < 2 else "mismatch"}],
                        "tokens": 40, "truncated": False,
                        "text": render([shown], [arith.confirmative_check(p.problem, answer)])})
    return out


def test_offline_fsdp_matches_one_process(tmp_path):
    from s2r.train.offline import OfflineConfig, run_offline

    from s2r.settings_guard import guard_output, model_digest
    from s2r.tasks import arith as arith_task
    from s2r.train.offline import rollout_settings

    cfg = {"data": ["arith:train"], "limit": 2, "samples": 4, "batch_size": 3, "micro_batch_size": 1, "lr": 1e-3}
    settings = rollout_settings(OfflineConfig(BASE, **cfg, **COMMON), arith_task.ArithTask()).record("s2r", model_digest(BASE))
    for name in ("one", "fsdp"):
        (tmp_path / name).mkdir()
        guard_output(tmp_path / name / "rollouts.jsonl", settings)  # as a run with these settings leaves them
        write_jsonl_atomic(tmp_path / name / "rollouts.jsonl", _offline_rollouts())  # not sampled again
    one = run_offline(OfflineConfig(BASE, out=str(tmp_path / "one"), **cfg, **COMMON))
    _run("offline", BASE, {**cfg, "out": str(tmp_path / "fsdp"), "strategy": "fsdp"})
    _same_logs(_log(tmp_path / "fsdp"), _log(tmp_path / "one"), ("train/loss", "train/kl", "grad_norm"))
    assert _log(tmp_path / "one")[-1]["train/kl"] > 0
    assert _greedy(tmp_path / "fsdp" / "model") == _greedy(one)


def test_bf16_policy_keeps_fp32_masters_and_a_bf16_reference():
    """--bf16 on under fsdp: the shards (AdamW's master weights) stay fp32, the reference is bf16,
    the forward computes in bf16 and returns fp32 logits."""
    from torch.distributed.tensor import DTensor

    from s2r.train.common import Distributed, load_models
    from s2r.train.sft import SFTConfig

    cfg = SFTConfig("unused", model=BASE, strategy="fsdp", bf16="on", kl_coef=0.1, **COMMON)
    dist_ = Distributed("cpu", group=True)
    try:
        model, ref, _ = load_models(cfg, dist_)
        assert all(isinstance(p, DTensor) and p.dtype == torch.float32 for p in model.parameters())
        assert all(p.dtype == torch.bfloat16 for p in ref.parameters())
        ids = torch.tensor([[1, 5, 9, 12, 7]])
        logits = model(input_ids=ids).logits
        full, _, _ = load_models(SFTConfig("unused", model=BASE, kl_coef=0.0, **COMMON), dist_)
        exact = full(input_ids=ids).logits
    finally:
        dist_.close()
    assert logits.dtype == torch.float32
    assert not torch.equal(logits, exact) and torch.allclose(logits, exact, rtol=0.05, atol=0.1)  # bf16 compute: close, not equal
