"""`s2r rl --backend vllm`: rollouts from a vLLM engine colocated with the trainer (TRL's colocate mode).

One process trains and generates: the engine is made once (`colocated_engine`), holding at most
`--gpu-memory-utilization` of the device; before each iteration's rollouts the policy's current
weights are pushed into it in memory (`push_policy`: LoRA adapters merged first), never through disk.
Where the platform has vLLM's sleep mode (CUDA, ROCm, XPU), the engine sleeps while the trainer
trains (level 1: weights to host memory, KV cache freed) and wakes before the push.

The sampler (vLLM's kernels) and the trainer (transformers' forward) give slightly different
probabilities to the same tokens, so the rollouts are not exactly on-policy. Truncated importance
sampling corrects for it (as TRL and veRL do): each trained token gets the weight
min(π_old(y_t) / π_vllm(y_t), C), and a part's clipped surrogate is multiplied by the mean weight of
its tokens (`losses.tis_weights`); the ratio ρ_p, its clipping and the KL are those of docs/method.md.
vLLM's log-probs are taken at the sampling temperature (logprobs_mode "processed_logprobs"), as the
trainer's are. A trained token whose characters no sampled token matches (the trainer's tokenization
of the text differs from what was sampled) gets weight 1.
"""

from __future__ import annotations

import math


def colocated_engine(cfg, model, tokenizer):
    """The rollout engine of `s2r rl`: cfg.model loaded by vLLM (float32 like the trainer), in this process."""
    from s2r.models.vllm_backend import VLLMBackend

    return VLLMBackend.from_pretrained(cfg.model, cfg, dtype="float32", seed=cfg.seed,
                                       logprobs_mode="processed_logprobs", tokenizer=tokenizer, sleep=None)


def policy_weights(model):
    """(name, tensor) of the policy as a plain Hugging Face checkpoint names them; a LoRA model must
    have its adapters merged (the adapter weights themselves are left out)."""
    for name, param in model.named_parameters():
        if "lora_" in name:
            continue
        yield name.removeprefix("base_model.model.").replace(".base_layer", ""), param.detach()


def push_policy(backend, model) -> None:
    """Load the policy's current weights into the engine (waking it first if it sleeps)."""
    backend.wake()
    lora = hasattr(model, "merge_adapter")
    if lora:
        model.merge_adapter()
    try:
        backend.push_weights(policy_weights(model))
    finally:
        if lora:
            model.unmerge_adapter()


def sampler_logprobs(tokenizer, n_ids: int, text: str, sampled: list[list], add_eos: bool) -> list[float]:
    """log π_vllm per predicted token of a rollout's ids [n_ids] (prompt + tokens of `text` + EOS when
    add_eos), aligned like token_logprobs: [n_ids − 1]; NaN where no sampled token has the same
    characters (the prompt, loop-written text, a token the trainer splits differently).

    sampled [[0, 1, -0.1], [1, 2, -0.2], [2, 2, -0.3]] (two characters and EOS), prompt of 2 tokens
      -> [nan, -0.1, -0.2, -0.3]"""
    by_span = {(s, e): lp for s, e, lp in sampled}
    spans = [tuple(o) for o in tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]]
    if add_eos:
        spans.append((len(text), len(text)))
    prompt = n_ids - len(spans)
    return [math.nan] * (prompt - 1) + [by_span.get(span, math.nan) for span in spans]
