"""`s2r rl --backend vllm` (vLLM colocated) and the CLI with vLLM; skipped without vLLM."""

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
                   threads=1, backend="vllm", gpu_memory_utilization=0.1, temperature=1.0)
    run_rl(cfg)
    log = list(read_jsonl(Path(cfg.out) / "log.jsonl"))
    assert [r["iteration"] for r in log] == [1, 2, 3]
    assert len(seen) == 3 and all(ours == theirs for ours, theirs in seen)
    assert seen[0][0] != seen[-1][0]  # the updates changed the greedy outputs: the pushes carried them


def test_the_cli_solves_with_vllm(tmp_path):
    from s2r.solve import SolveConfig, run_solve

    records = run_solve(SolveConfig(out=str(tmp_path / "t.jsonl"), data=["arith"], limit=5, model=str(BASE), backend="vllm",
                                    system="", template="plain", max_tokens=128, gpu_memory_utilization=0.1))
    assert len(records) == 5 and (tmp_path / "t.jsonl").exists()
