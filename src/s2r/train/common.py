"""What `s2r sft` and `s2r rl` share: the training fields, processes, models, autocast, logs, saving."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from s2r.config import arg
from s2r.prompts import DEFAULT_SYSTEM


@dataclass(kw_only=True)
class TrainFields:
    """Fields of every training command (`cfg.model` and `cfg.kl_coef` come from the command)."""

    micro_batch_size: int = arg(8, help="sequences per forward pass and process (gradient accumulation)")
    weight_decay: float = arg(0.0, help="AdamW weight decay")
    grad_clip: float = arg(1.0, help="clip the gradient norm to this (0 = off)")
    lora_rank: int = arg(0, help="LoRA rank (0 = full fine-tuning)")
    lora_alpha: int = arg(16, help="LoRA alpha")
    lora_dropout: float = arg(0.0, help="LoRA dropout")
    lora_targets: list[str] = arg(["all-linear"], help="LoRA target modules")
    bf16: str = arg("auto", help="bf16 autocast: auto (on GPUs that support it), on, off")
    system: str = arg(DEFAULT_SYSTEM, help="system prompt ('' for none), as at inference")
    template: str = arg("auto", help="prompt template: auto, chat, plain (as at inference)")
    device: str = arg("auto", help="auto (cuda:LOCAL_RANK if available), cpu, cuda")
    threads: int = arg(0, help="torch CPU threads per process (0 = cores / processes)")
    tensorboard: bool = arg(True, help="also log to OUT/tb (needs the tensorboard package)")

    def autocast(self, device):
        """bf16 autocast on GPUs that support it (bf16=auto), always (on) or never (off)."""
        import torch

        if self.bf16 not in ("auto", "on", "off"):
            raise ValueError(f"bf16 must be auto, on or off, not {self.bf16!r}")
        on = self.bf16 == "on" or (self.bf16 == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=on)


class Distributed:
    """torch.distributed as set up by torchrun / accelerate launch (WORLD_SIZE, RANK, LOCAL_RANK)."""

    def __init__(self, device: str):
        import torch
        import torch.distributed as dist

        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device == "auto":
            device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, values: list[float]) -> list[float]:
        import torch
        import torch.distributed as dist

        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def gather(self, obj) -> list:
        """[obj of process 0, obj of process 1, ...] on every process."""
        import torch.distributed as dist

        if self.world == 1:
            return [obj]
        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def merge_stats(self, stats: dict[str, list[float]]) -> dict[str, list[float]]:
        """{key: [Σ, n]} added up over processes (keys may differ between them)."""
        merged: dict[str, list[float]] = {}
        for part in self.gather(stats):
            for k, (s, n) in part.items():
                m = merged.setdefault(k, [0.0, 0])
                m[0] += s
                m[1] += n
        return dict(sorted(merged.items()))

    def barrier(self) -> None:
        import torch.distributed as dist

        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        import torch.distributed as dist

        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()



def load_models(cfg, device):
    """(trainable model, frozen reference or None, tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from s2r.models.hf import from_pretrained

    tokenizer = from_pretrained(AutoTokenizer, cfg.model)
    model = from_pretrained(AutoModelForCausalLM, cfg.model, dtype=torch.float32).to(device)
    ref = None
    if cfg.lora_rank:
        from peft import LoraConfig, get_peft_model

        targets = cfg.lora_targets[0] if cfg.lora_targets == ["all-linear"] else cfg.lora_targets
        model = get_peft_model(model, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                                 target_modules=targets, task_type="CAUSAL_LM"))
    elif cfg.kl_coef > 0:
        ref = from_pretrained(AutoModelForCausalLM, cfg.model, dtype=torch.float32).to(device).eval()
        ref.requires_grad_(False)
    return model, ref, tokenizer



def make_writer(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("tensorboard is not installed: logging to log.jsonl only", file=sys.stderr)
        return None
    return SummaryWriter(str(path))


def finished(info_path: Path, key: str, done, main: bool, what: str) -> bool:
    """True (and says so) when info_path records a finished run with the same key; `done(info)` tells
    whether that run went all the way."""
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    if info.get("key") == key and done(info):
        if main:
            print(f"reusing the {what} in {info_path.parent / 'model'} (same data and settings)", file=sys.stderr)
        return True
    return False


def read_log(path: Path, n: int) -> list[dict]:
    """The first n records of a run's log.jsonl (a killed run may have left a torn last line)."""
    from s2r.jsonl import read_jsonl

    return list(read_jsonl(path, allow_torn_tail=True, allow_empty=True))[:n] if path.exists() else []


class RunLog:
    """OUT/log.jsonl (rewritten to the records a checkpoint covers, then appended per step),
    TensorBoard in OUT/tb and progress (a bar, or periodic lines off a terminal); all on the main process only."""

    def __init__(self, out: Path, records: list[dict], total: int, desc: str, unit: str, main: bool, tensorboard: bool):
        from s2r.jsonl import write_jsonl_atomic
        from s2r.progress import Progress

        self.file = self.writer = None
        if main:
            out.mkdir(parents=True, exist_ok=True)
            write_jsonl_atomic(out / "log.jsonl", records)  # drop lines past the checkpoint of a killed run
            self.file = (out / "log.jsonl").open("a", encoding="utf-8")
            self.writer = make_writer(out / "tb") if tensorboard else None
        self.bar = Progress(desc, total, initial=len(records), unit=unit, enabled=main)

    def write(self, step: int, record: dict, **postfix: str) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        self.bar.update(1, **postfix)
        if self.writer:
            for k, v in record.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        self.bar.close()
        if self.writer:
            self.writer.close()
        if self.file:
            self.file.close()


def save_checkpoint(path: Path, model, trainable_names: set[str], opt, **state) -> None:
    """Atomically write the trainable weights, the optimiser and `state` (key, step, ...)."""
    import torch

    trainable = {n: p.detach().cpu() for n, p in model.named_parameters() if n in trainable_names}
    tmp = path.with_suffix(".tmp")
    torch.save({"trainable": trainable, "opt": opt.state_dict(), **state}, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path, key: str, model, opt, device) -> dict | None:
    """Restore weights and optimiser from a checkpoint of the same run (same key); its state, or None."""
    import torch

    if not path.exists():
        return None
    state = torch.load(path, weights_only=False, map_location=device)
    if state["key"] != key:
        return None
    model.load_state_dict(state["trainable"], strict=False)
    opt.load_state_dict(state["opt"])
    return state


def wrap_ddp(model, dist_: Distributed):
    """The model as called for training: DDP-wrapped under several processes."""
    import torch

    if dist_.world == 1:
        return model
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[dist_.device.index] if dist_.device.type == "cuda" else None)


def save_model(model, tokenizer, cfg: TrainFields, out: Path) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if cfg.lora_rank:
        model.save_pretrained(out / "adapter")
        model = model.merge_and_unload()
    model.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
