"""The memory estimate of docs/memory.md, by hand on a toy shape, and the real models' sizes."""

import pytest

from s2r.train.memory import SHAPES, Shape, activations, estimate, layer_params, parameters


def test_a_toy_shape_by_hand():
    s = Shape(hidden=4, layers=1, heads=2, kv_heads=1, intermediate=8, vocab=10, tied=True, qkv_bias=False)
    # kv = 1 head · 2 = 2; q, o: 2·16 = 32; k, v: 2·4·2 = 16; MLP 3·4·8 = 96; norms 8 -> 152
    assert layer_params(s) == 152
    assert parameters(s) == 152 + 40 + 4  # + tied embedding 10·4 + final norm
    # per token: layer 2·(7·4 + 2·2 + 4·8) = 128; logits 4·4·10 = 160
    assert activations(s, 3, checkpointing=False) == 3 * (128 + 160)
    assert activations(s, 3, checkpointing=True) == 3 * (2 * 4 + 128 + 160)
    e = estimate(s, "fsdp", 2, lora=False, seq=3, micro=1, checkpointing=False)
    assert e["weights"] == 16 * 196 / 2 and e["reference"] == 2 * 196 / 2 and e["gathered layers"] == 4 * 152
    assert e["total"] == 1568 + 196 + 608 + 3 * 288
    ddp = estimate(s, "ddp", 2, lora=False, seq=3, micro=1, checkpointing=False)
    assert ddp["weights"] == 16 * 196 and "gathered layers" not in ddp


def test_the_models_sizes():
    # the published parameter counts
    assert parameters(SHAPES["Qwen2.5-Math-7B"]) / 1e9 == pytest.approx(7.62, abs=0.01)
    assert parameters(SHAPES["Qwen2.5-Math-1.5B"]) / 1e9 == pytest.approx(1.54, abs=0.01)
    assert parameters(SHAPES["Llama-3.1-8B"]) / 1e9 == pytest.approx(8.03, abs=0.01)
    assert parameters(SHAPES["Qwen2-0.5B"]) / 1e9 == pytest.approx(0.494, abs=0.001)
