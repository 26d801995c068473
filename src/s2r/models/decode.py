"""A KV-cached decoding loop that drops finished rows from the batch as it goes.

`model.generate` keeps every row of a batch until the longest one ends: in a batch of self-correcting
trajectories, where most stop after one attempt and a few run to the token budget, most of the
compute goes to padding. `decode` removes finished rows from the KV cache (`DynamicCache.
batch_select_indices`) whenever a quarter of the rows still decoding have finished, so a step costs
what the unfinished rows cost.

Sampling is exactly what `SamplingParams` says (greedy, or temperature then top-p); the model's own
generation_config (top-k, repetition penalty, ...) is not applied, as with an OpenAI-style server
asked for these parameters.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def next_tokens(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """[B, V] logits -> [B] token ids: argmax at temperature 0, else a sample from softmax(logits / T)
    restricted to the smallest set of tokens whose probability reaches top_p."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # [B, V]
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)  # [B, V]
        outside = sorted_p.cumsum(-1) - sorted_p >= top_p  # the mass before this token already reaches top_p
        sorted_p = sorted_p.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1)[:, 0]


@torch.no_grad()
def decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new: int, eos_id: int | None,
           temperature: float = 0.0, top_p: float = 1.0, logprobs: bool = False,
           stopped: Callable[[list[int]], bool] | None = None) -> tuple[list[list[int]], list[list[float]] | None]:
    """Generate up to max_new tokens for each left-padded row of input_ids [B, P].

    A row ends at EOS (included) or when stopped(its new ids) says so (a stop string). Returns the
    new ids of each row and, with logprobs, log softmax(logits) [temperature 1] of each chosen token.
    """
    from transformers import DynamicCache

    batch = input_ids.shape[0]
    out: list[list[int]] = [[] for _ in range(batch)]
    lps: list[list[float]] = [[] for _ in range(batch)]
    rows = list(range(batch))  # row of the batch behind each position of the shrinking tensors
    mask = attention_mask
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # [B, P]: left padding does not shift positions
    cache = DynamicCache()
    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                   use_cache=True).logits[:, -1]  # [B, V]
    position = positions[:, -1:]  # [B, 1]
    alive = [True] * batch  # per position of the shrinking tensors
    for step in range(max_new):
        tokens = next_tokens(logits, temperature, top_p)  # [b]
        ids = tokens.tolist()
        chosen = torch.log_softmax(logits.float(), -1).gather(-1, tokens[:, None])[:, 0].tolist() if logprobs else None
        for i, row in enumerate(rows):
            if alive[i]:
                out[row].append(ids[i])
                if chosen is not None:
                    lps[row].append(chosen[i])
                alive[i] = not (ids[i] == eos_id or (stopped is not None and stopped(out[row])))
        done = alive.count(False)
        if done == len(rows) or step == max_new - 1:
            break
        if done * 4 >= len(rows):  # drop the finished rows: [b] -> [b - done]
            kept = [i for i, a in enumerate(alive) if a]
            keep = torch.tensor(kept, device=tokens.device)
            cache.batch_select_indices(keep)
            rows, mask, position, tokens = [rows[i] for i in kept], mask[keep], position[keep], tokens[keep]
            alive = [True] * len(rows)
        mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=-1)  # [b, P + step + 1]
        position = position + 1
        logits = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=position, past_key_values=cache,
                       use_cache=True).logits[:, -1]
    return out, (lps if logprobs else None)
