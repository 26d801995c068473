"""Generation with a local Hugging Face causal LM: batched, left-padded, KV-cached (`decode.py`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch

from s2r.models.backend import Completion, SamplingParams, cut_at_stop
from s2r.models.decode import decode


def pick_device(device: str = "auto") -> torch.device:
    if device != "auto":
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # "gpt2", "org/name": what the Hub could serve


class ModelLoadError(ValueError):
    """A model or tokenizer that cannot be loaded; the message names it, on one line."""


def from_pretrained(loader, name: str, **kwargs):
    """`loader.from_pretrained(name, **kwargs)` (loader: AutoTokenizer, AutoModelForCausalLM, ...), the
    one place every command loads a model through. A local path that does not exist, is not a
    folder or has no config.json is refused before transformers reads it; a name that is no local
    path may be a Hub id, so from_pretrained tries it. Every failure is one ModelLoadError line."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    name = str(name)
    path = Path(name)
    local = path.exists() or not _HUB_ID.match(name) or name.startswith((".", "~"))
    if local and not path.exists():
        raise ModelLoadError(f"cannot load model {name!r}: no such folder")
    if local and not path.is_dir():
        raise ModelLoadError(f"cannot load model {name!r}: not a folder (a model is a save_pretrained folder)")
    if local and not (path / "config.json").is_file():
        what = "the folder is empty" if not any(path.iterdir()) else "the folder has no config.json"
        raise ModelLoadError(f"cannot load model {name!r}: {what} (a model is a save_pretrained folder)")
    try:
        return loader.from_pretrained(name, **kwargs)
    except Exception as e:  # transformers raises OSError, ValueError, KeyError, ... with many-line messages
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        where = "" if local else "no such folder, and the Hub could not provide it: "
        raise ModelLoadError(f"cannot load model {name!r}: {where}{first}") from e


def load_model(path: str, device: str = "auto", dtype: str = "auto"):
    """(model, tokenizer) through transformers' own from_pretrained; left padding for generation."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = from_pretrained(AutoTokenizer, path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dev = pick_device(device)
    torch_dtype = {"auto": torch.bfloat16 if dev.type == "cuda" else torch.float32, "float32": torch.float32,
                   "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    model = from_pretrained(AutoModelForCausalLM, path, dtype=torch_dtype).to(dev).eval()
    return model, tokenizer


class TransformersBackend:
    """complete() decodes batches of prompts sorted by length (less padding), dropping finished rows.

    Returned token ids stop at (and include) the first EOS; a stop string ends the text before it,
    like the OpenAI API, and the token that completed it is the last id returned.
    """

    keeps_stop_strings = True  # honours SamplingParams.include_stop

    def __init__(self, model, tokenizer, batch_size: int = 32):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.device = next(model.parameters()).device
        self.max_positions = getattr(model.config, "max_position_embeddings", None)

    @classmethod
    def from_pretrained(cls, path: str, batch_size: int = 32, device: str = "auto", dtype: str = "auto"):
        return cls(*load_model(path, device, dtype), batch_size=batch_size)

    def close(self) -> None:
        pass

    def complete(self, prompts: Sequence[str], params: SamplingParams,
                 max_tokens: Sequence[int] | None = None) -> list[Completion]:
        if params.seed is not None:
            torch.manual_seed(params.seed)
        budgets = max_tokens or [params.max_tokens] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        out: list[Completion | None] = [None] * len(prompts)
        for lo in range(0, len(order), self.batch_size):
            idx = order[lo : lo + self.batch_size]
            for i, c in zip(idx, self._batch([prompts[i] for i in idx], params, [budgets[i] for i in idx])):
                out[i] = c
        return out  # type: ignore[return-value]

    @torch.no_grad()
    def _batch(self, prompts: list[str], params: SamplingParams, budgets: list[int]) -> list[Completion]:
        tok = self.tokenizer
        bos = tok.bos_token
        add_special = not (bos and all(p.startswith(bos) for p in prompts))
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special).to(self.device)
        lengths = enc["attention_mask"].sum(-1).tolist()  # [B]: each prompt's own tokens (positions count per row)
        rooms = [self.max_positions - n if self.max_positions else b for n, b in zip(lengths, budgets)]
        if min(rooms) <= 0:  # those prompts fail alone; the others are generated as if they were not there
            fits = [i for i, r in enumerate(rooms) if r > 0]
            done = dict(zip(fits, self._batch([prompts[i] for i in fits], params, [budgets[i] for i in fits]))) if fits else {}
            return [done.get(i) or Completion("", "error", 0, error=f"prompt of {lengths[i]} tokens leaves no room in "
                                                                    f"{self.max_positions} positions") for i in range(len(prompts))]
        max_new = [min(b, r) for b, r in zip(budgets, rooms)]
        tail = max((len(s) for s in params.stop), default=0) + 2  # tokens enough to hold any stop string

        def stopped(ids: list[int]) -> bool:
            text = tok.decode(ids[-tail:], skip_special_tokens=True)
            return any(s in text for s in params.stop)

        new, logps = decode(self.model, enc["input_ids"], enc["attention_mask"], max_new, tok.eos_token_id,
                            params.temperature, params.top_p, params.logprobs, stopped if params.stop else None)
        results = []
        for b, ids in enumerate(new):
            finish = "stop" if ids and ids[-1] == tok.eos_token_id else "length"  # decode ends a row at EOS
            text = tok.decode(ids, skip_special_tokens=True)
            hit = None
            if params.stop:
                text, hit = cut_at_stop(text, params.stop)
                if hit:
                    finish = "stop"
                    ids = self._ids_through(ids, len(text) + len(hit))
                    text += hit if params.include_stop else ""
            results.append(Completion(
                text=text, finish_reason=finish, num_tokens=len(ids), token_ids=ids, stop_string=hit,
                logprobs=logps[b][: len(ids)] if logps is not None else None,
                prompt_tokens=int(enc["attention_mask"][b].sum()),
            ))
        return results

    def _ids_through(self, ids: list[int], n_chars: int) -> list[int]:
        """The shortest prefix of ids whose text covers the first n_chars characters."""
        for k in range(1, len(ids) + 1):
            if len(self.tokenizer.decode(ids[:k], skip_special_tokens=True)) >= n_chars:
                return ids[:k]
        return ids
