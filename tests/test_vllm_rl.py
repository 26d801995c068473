"""`s2r rl --backend vllm` (vLLM colocated): the pushes, a killed run resuming exactly, and the CLI
with vLLM; skipped without vLLM."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from s2r.models.backend import SamplingParams
from s2r.tasks import load_problems

BASE = Path(__file__).parent.parent / "src" / "s2r" / "assets" / "base-seed0" / "model"
pytest.importorskip("vllm")


@pytest.mark.slow
@pytest.mark.parametrize("level", ["outcome", "process"])
def test_rl_pushes_its_weights_into_vllm_after_each_update(level, tmp_path, monkeypatch):
    import s2r.train.rl_vllm as rl_vllm
    from s2r.jsonl import read_jsonl
    from s2r.models.hf import TransformersBackend
    from s2r.train.rl import RLConfig, run_rl

    prompts = [f"Question: {p.problem}\nAnswer:\n" for p in load_problems("arith", limit=20)]
    greedy = SamplingParams(max_tokens=64)
    seen = []
    push = rl_vllm.push_policy

    def push_and_compare(backend, model):  # the real push, then both engines on the same 20 prompts
        push(backend, model)
        model.eval()
        ours = [c.token_ids for c in TransformersBackend(model, backend.tokenizer).complete(prompts, greedy)]
        seen.append((ours, [c.token_ids for c in backend.complete(prompts, greedy)]))

    monkeypatch.setattr(rl_vllm, "push_policy", push_and_compare)
    cfg = RLConfig(str(BASE), level=level, data=["arith:train"], limit=24, out=str(tmp_path / level), iterations=3, prompts=4,
                   samples=2, max_tokens=200, updates=1, lr=3e-3, system="", template="plain", tensorboard=False,
                   threads=1, backend="vllm", kv_cache_gib=0.25, temperature=1.0)
    run_rl(cfg)
    log = list(read_jsonl(Path(cfg.out) / "log.jsonl"))
    assert [r["iteration"] for r in log] == [1, 2, 3]
    assert len(seen) == 3 and all(ours == theirs for ours, theirs in seen)
    assert seen[0][0] != seen[-1][0]  # the updates changed the greedy outputs: the pushes carried them


def test_the_cli_solves_with_vllm(tmp_path):
    from s2r.solve import SolveConfig, run_solve

    records = run_solve(SolveConfig(out=str(tmp_path / "t.jsonl"), data=["arith"], limit=5, model=str(BASE), backend="vllm",
                                    system="", template="plain", max_tokens=128, kv_cache_gib=0.25))
    assert len(records) == 5 and (tmp_path / "t.jsonl").exists()


def _rl_command(out: Path) -> list[str]:
    flags = dict(data="arith:train", limit=24, out=out, iterations=3, prompts=4, samples=2, max_tokens=200, updates=1, lr=3e-3,
                 system="", template="plain", tensorboard="false", threads=1, backend="vllm", kv_cache_gib=0.25,
                 temperature=1.0, ckpt_every=1)
    args = [x for k, v in flags.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    return [sys.executable, "-m", "s2r.cli", "rl", str(BASE), *args]


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.slow
def test_a_killed_vllm_run_resumes_exactly(tmp_path):
    """kill -9 after the first checkpoint, the same command again: the log and the weights of the
    uninterrupted run (the engine restarts from the starting model and gets the checkpoint's weights)."""
    import torch

    from s2r.jsonl import read_jsonl

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole = subprocess.run(_rl_command(tmp_path / "whole"), capture_output=True, text=True, timeout=900, env=env)
    assert whole.returncode == 0, whole.stderr[-3000:]
    cut = tmp_path / "cut"
    proc = subprocess.Popen(_rl_command(cut), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    deadline = time.monotonic() + 600
    while not (cut / "ckpt.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and anything it started
    proc.wait()
    killed_at = len(list(read_jsonl(cut / "log.jsonl")))
    assert 1 <= killed_at < 3 and not (cut / "rl.json").exists()
    again = subprocess.run(_rl_command(cut), capture_output=True, text=True, timeout=900, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert re.search(r"resuming rl \(\w+\) at iteration [12] of 3", again.stderr)
    print(f"killed after {killed_at} of 3 iterations")
    clock = ("seconds", "gen_seconds", "push_seconds")
    resumed, log = ([{k: v for k, v in r.items() if k not in clock} for r in read_jsonl(p / "log.jsonl")]
                    for p in (cut, tmp_path / "whole"))
    assert [r["iteration"] for r in log] == [1, 2, 3] and log[-1]["train/loss"] != 0
    assert resumed == log  # exactly: the same samples (seeded per iteration and request), losses and rewards
    whole_weights, cut_weights = _weights(tmp_path / "whole" / "model"), _weights(cut / "model")
    assert whole_weights.keys() == cut_weights.keys()
    assert all(torch.equal(cut_weights[name], t) for name, t in whole_weights.items())


@pytest.mark.slow
def test_vllm_rollouts_under_fsdp_match_ddp(tmp_path):
    """Two processes, each with its own engine: under fsdp the push reads the gathered weights, so the
    engines sample what they sample under ddp and the updates agree."""
    from test_fsdp import RL, RL_KEYS, _log, _run, _same_logs

    cfg = {**RL, "level": "process", "backend": "vllm", "kv_cache_gib": 0.25}
    for strategy in ("ddp", "fsdp"):
        _run("rl", str(BASE), {**cfg, "out": str(tmp_path / strategy), "strategy": strategy})
    _same_logs(_log(tmp_path / "fsdp"), _log(tmp_path / "ddp"), RL_KEYS)
    assert _log(tmp_path / "ddp")[-1]["train/kl_ref"] > 0  # the second iteration sampled from the updated policy
