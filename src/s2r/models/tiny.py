"""`s2r tiny-model OUT_DIR`: a small randomly initialised Llama-style causal LM with a character-level
tokenizer, saved with `save_pretrained` so that transformers (and vLLM) load it like any checkpoint.

The tokenizer is a Hugging Face fast tokenizer: one token per character (printable ASCII, newline,
tab), plus <pad>, <bos>, <eos>, <unk>, plus optional *phrases* that are one token each wherever they
occur (the embedded task's fixed wording: its sequences get ~2.5× shorter, its digits stay single
characters). Unknown characters map to <unk>. It is saved with a Llama
config, not Qwen2: AutoTokenizer would load it next to a Qwen2 config as a Qwen2 tokenizer that drops
spaces (the design notes).
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from s2r.config import arg

SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<unk>"]
CHARS = [c for c in string.printable if c not in "\r\x0b\x0c"]  # printable ASCII, space, \t, \n

# A minimal chat template for smoke tests of the chat code paths.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass
class TinyModelConfig:
    out_dir: str = arg(help="folder to write the model and tokenizer to", positional=True)
    hidden_size: int = arg(64, help="model width")
    layers: int = arg(2, help="transformer blocks")
    heads: int = arg(4, help="attention heads")
    intermediate_size: int = arg(256, help="MLP width")
    max_positions: int = arg(2048, help="longest sequence (prompt + generation) in tokens")
    chat_template: bool = arg(False, help="give the tokenizer a chat template")
    phrases: list[str] = arg([], help="strings that are one token each (longest match first)")
    seed: int = arg(0, help="initialisation seed")


def char_tokenizer(chat_template: bool = False, phrases: Sequence[str] = ()):
    """A character-level PreTrainedTokenizerFast (offsets map each token to its characters); each
    of `phrases` is one token, matched longest first:

        phrases [" + ", "}."]:  "4 + 5}."  ->  ["4", " + ", "5", "}."]
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    phrases = sorted(set(p for p in phrases if len(p) > 1), key=lambda p: (-len(p), p))
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + CHARS + phrases)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    pattern = "".join(re.escape(p) + "|" for p in phrases) + r"[\s\S]"
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    tok.decoder = decoders.Fuse()
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>",
        padding_side="left", clean_up_tokenization_spaces=False,
    )
    if chat_template:
        hf.chat_template = CHAT_TEMPLATE
    return hf


def build_tiny_model(cfg: TinyModelConfig):
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = char_tokenizer(cfg.chat_template, cfg.phrases)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.heads,
        max_position_embeddings=cfg.max_positions,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return model, tokenizer


def run_tiny_model(cfg: TinyModelConfig) -> Path:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model, tokenizer = build_tiny_model(cfg)
    out = Path(cfg.out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote a {n / 1e6:.2f}M-parameter Llama model with a {len(tokenizer)}-token character tokenizer to {out}")
    return out
