"""Token batches with their loss masks, built together (the design notes habit 6)."""

from __future__ import annotations

import torch


def encode(tokenizer, prompt: str, completion: str, add_eos: bool = True) -> tuple[list[int], list[int]]:
    """(ids, loss mask) of prompt + completion (+ EOS); the mask is 1 on completion tokens and EOS.

    prompt "Q:", completion "ab"  ->  tokens [Q, :, a, b, <eos>], mask [0, 0, 1, 1, 1]  (pinned in tests)
    """
    p = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    c = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if add_eos:
        c = c + [tokenizer.eos_token_id]
    return p + c, [0] * len(p) + [1] * len(c)


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example: input_ids, attention_mask and loss_mask, all [B, T]."""
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(examples), width), dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.float)
    for b, (x, m) in enumerate(examples):
        ids[b, : len(x)] = torch.tensor(x)
        attn[b, : len(x)] = 1
        mask[b, : len(m)] = torch.tensor(m, dtype=torch.float)
    return {"input_ids": ids, "attention_mask": attn, "loss_mask": mask}


def token_logprobs(model, batch: dict[str, torch.Tensor], temperature: float = 1.0) -> torch.Tensor:
    """log π(x_t | x_<t) for every position t ≥ 1, shape [B, T-1] (aligned with loss_mask[:, 1:]);
    π is the model's distribution at `temperature` (softmax of logits / T), as RL samples from it."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]  # [B, T-1, V]
    return torch.log_softmax(logits.float() / temperature, dim=-1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]


def encode_spans(tokenizer, prompt: str, completion: str, spans, add_eos: bool = True) -> tuple[list[int], list[int]]:
    """(ids, loss mask) of prompt + completion (+ EOS), the mask 1 on completion tokens whose last
    character lies in one of the character `spans` of the completion, and on the closing EOS.

    prompt "Q:", completion "abcd", spans [(1, 2), (3, 4)]
      -> tokens [Q, :, a, b, c, d, <eos>], mask [0, 0, 0, 1, 0, 1, 1]  (pinned in tests)
    """
    p = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    enc = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(end > start and any(s <= end - 1 < e for s, e in spans)) for start, end in enc["offset_mapping"]]
    ids = list(enc["input_ids"])
    if add_eos:
        ids, mask = ids + [tokenizer.eos_token_id], mask + [1]
    return p + ids, [0] * len(p) + mask


def encode_parts(tokenizer, prompt: str, completion: str, spans, add_eos: bool = True,
                 skip=()) -> tuple[list[int], list[int]]:
    """(ids, part index per token) of prompt + completion (+ EOS) for RL: −1 on the prompt; i on the
    completion tokens of character span i (the spans tile the completion; `format.token_spans`
    decides straddling tokens); the closing EOS belongs to the last part (docs/method.md §3); −1 again
    on tokens touching a character span in `skip` (text the loop wrote, not the model: not trained).

    prompt "Q:", completion "abcd", spans [(0, 1), (1, 4)]
      -> tokens [Q, :, a, b, c, d, <eos>], parts [-1, -1, 0, 1, 1, 1, 1]  (pinned in tests)
    the same with skip [(1, 3)] -> parts [-1, -1, 0, -1, -1, 1, 1]
    """
    from s2r.format import token_spans

    p = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    enc = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
    parts = [-1] * len(enc["input_ids"])
    for i, (t0, t1) in enumerate(token_spans(enc["offset_mapping"], spans)):
        parts[t0:t1] = [i] * (t1 - t0)
    for t, (start, end) in enumerate(enc["offset_mapping"]):
        if any(start < e and s < end for s, e in skip):
            parts[t] = -1
    ids = list(enc["input_ids"])
    if add_eos:
        ids, parts = ids + [tokenizer.eos_token_id], parts + [len(spans) - 1]
    return p + ids, [-1] * len(p) + parts
