"""Bytes per GPU of `s2r sft` / `s2r rl` under ddp, fsdp and LoRA, from a model's shape (docs/memory.md).

    python -m s2r.train.memory [--seq 4096] [--micro 1]      # prints the tables of docs/memory.md

What is counted, per GPU, with N GPUs and P parameters (this project's training: fp32 master
weights, bf16 compute, AdamW):
  full fine-tuning  weights 4P, gradients 4P, AdamW moments 8P: 16P, divided by N under fsdp;
                    the frozen reference in bf16: 2P (2P/N under fsdp);
                    fsdp also holds two decoder layers unsharded in bf16 (the one computing, the
                    one prefetched).
  LoRA              the frozen base in fp32: 4P (4P/N under fsdp), adapters 16 bytes per
                    parameter; no reference (the model with its adapters disabled).
  activations       per token and layer, the bf16 tensors autograd keeps of a Llama/Qwen2 decoder
                    layer with SDPA attention (no [s, s] scores): its input, the two norm outputs,
                    q, k, v, the attention output, the MLP's gate, up, activation and product:
                    2 · (6h + 2·kv + 4i) bytes (h hidden, kv = kv heads · head dim, i intermediate),
                    plus the residual input h; with gradient checkpointing only each layer's input
                    (2h) is kept, and one layer's full set is live while it is recomputed;
                    the logits: 4 fp32 [s, V] tensors (policy and reference logits, and their log-softmax).
  rl generation     fsdp gathers the whole policy in bf16 for decoding (2P), and the KV cache of
                    the rollouts: 2 · layers · kv · 2 bytes per token; it takes turns with the
                    training activations, so the peak counts the larger of the two.
Not counted: the CUDA context and allocator fragmentation (a few GB): a setting "fits" below 90%
of the GPU.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

GB = 1e9


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool  # input embedding and LM head share one matrix
    qkv_bias: bool


# from the models' config.json (Hugging Face hub), written here so that nothing is downloaded
SHAPES = {
    "Qwen2-0.5B": Shape(896, 24, 14, 2, 4864, 151936, tied=True, qkv_bias=True),
    "Qwen2.5-Math-1.5B": Shape(1536, 28, 12, 2, 8960, 151936, tied=True, qkv_bias=True),
    "Qwen2.5-Math-7B": Shape(3584, 28, 28, 4, 18944, 152064, tied=False, qkv_bias=True),
    "Llama-3.1-8B": Shape(4096, 32, 32, 8, 14336, 128256, tied=False, qkv_bias=False),
}


def kv_width(s: Shape) -> int:
    return s.kv_heads * (s.hidden // s.heads)  # kv heads · head dim


def layer_params(s: Shape) -> int:
    """q and o: h², k and v: h·kv (+ biases of q, k, v); MLP gate, up, down: 3·h·i; two RMSNorms: 2h."""
    kv = kv_width(s)
    attn = 2 * s.hidden * s.hidden + 2 * s.hidden * kv + ((s.hidden + 2 * kv) if s.qkv_bias else 0)
    return attn + 3 * s.hidden * s.intermediate + 2 * s.hidden


def parameters(s: Shape) -> int:
    """P = layers · layer + embeddings (twice when the head is not tied) + the final norm."""
    return s.layers * layer_params(s) + s.vocab * s.hidden * (1 if s.tied else 2) + s.hidden


def lora_parameters(s: Shape, rank: int) -> int:
    """Adapters on every linear layer of the decoder (all-linear): rank · (in + out) each."""
    kv = kv_width(s)
    shapes = [(s.hidden, s.hidden)] * 2 + [(s.hidden, kv)] * 2 + [(s.hidden, s.intermediate)] * 2 + [(s.intermediate, s.hidden)]
    return s.layers * sum(rank * (a + b) for a, b in shapes)


def activations(s: Shape, tokens: int, checkpointing: bool) -> float:
    """Bytes autograd keeps for one micro-batch of `tokens` tokens (see the module docstring)."""
    kv = kv_width(s)
    per_layer = 2 * (7 * s.hidden + 2 * kv + 4 * s.intermediate) * tokens  # bf16
    layers = (s.layers * 2 * s.hidden * tokens + per_layer) if checkpointing else s.layers * per_layer
    return layers + 4 * 4 * s.vocab * tokens  # + 4 fp32 [tokens, V] tensors


def estimate(s: Shape, strategy: str, gpus: int, lora: bool, seq: int, micro: int, checkpointing: bool,
             rank: int = 64, rollout_tokens: int = 0) -> dict[str, float]:
    """Bytes per GPU by component; rollout_tokens > 0 adds the rl generation peak (gathered weights
    and the KV cache of that many tokens at once)."""
    p = parameters(s)
    n = gpus if strategy == "fsdp" else 1
    out = {}
    if lora:
        out["weights"] = 4 * p / n
        out["trainable"] = 16 * lora_parameters(s, rank) / n
    else:
        out["weights"] = 16 * p / n  # fp32 weights, gradients, two AdamW moments
        out["reference"] = 2 * p / n
    if strategy == "fsdp":
        out["gathered layers"] = 2 * 2 * layer_params(s)
    out["activations"] = activations(s, seq * micro, checkpointing)
    if rollout_tokens:
        out["generation"] = (2 * p if strategy == "fsdp" else 0) + 2 * s.layers * kv_width(s) * 2 * rollout_tokens
    # generation and training take turns: the peak is the held state plus the larger of the two
    out["total"] = sum(v for k, v in out.items() if k not in ("activations", "generation")) + max(
        out["activations"], out.get("generation", 0.0))
    return out


def table(seq: int, micro: int, gpu_gb: float = 80, rollouts: int = 64 * 4, rollout_len: int = 1280, batch: int = 64) -> str:
    """Markdown table; rl: `rollouts` per iteration over the GPUs, decoded `batch` at a time, each
    of `rollout_len` tokens at most (prompt and completion)."""
    rows = ["| model | P | setting | GPUs | no checkpointing (GB) | checkpointing (GB) | rl peak, checkpointing (GB) |",
            "|---|---|---|---|---|---|---|"]
    for name, s in SHAPES.items():
        if name == "Qwen2-0.5B":
            continue
        for setting, strategy, lora in (("ddp", "ddp", False), ("fsdp", "fsdp", False), ("LoRA r64, ddp", "ddp", True),
                                        ("LoRA r64, fsdp", "fsdp", True)):
            for gpus in (1, 8):
                if strategy == "fsdp" and gpus == 1:
                    continue
                cells = []
                for ck, roll in ((False, 0), (True, 0), (True, min(batch, rollouts // gpus) * rollout_len)):
                    gb = estimate(s, strategy, gpus, lora, seq, micro, ck, rollout_tokens=roll)["total"] / GB
                    cells.append(f"{gb:,.0f}" + ("" if gb <= 0.9 * gpu_gb else " ✗"))
                rows.append(f"| {name} | {parameters(s) / 1e9:.2f}B | {setting} | {gpus} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seq", type=int, default=4096, help="tokens per sequence")
    ap.add_argument("--micro", type=int, default=1, help="sequences per micro-batch")
    ap.add_argument("--gpu-gb", type=float, default=80, help="memory of one GPU (GB)")
    a = ap.parse_args(argv)
    print(f"Bytes per GPU (GB = 1e9), sequences of {a.seq} tokens, micro-batch {a.micro}; ✗: above 90% of {a.gpu_gb:g} GB.\n")
    print(table(a.seq, a.micro, a.gpu_gb))


if __name__ == "__main__":
    main()
