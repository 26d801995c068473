"""What `s2r sft` and `s2r rl` share: the training fields, processes, models, autocast, logs, saving."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from s2r.config import arg
from s2r.prompts import PromptFields, write_model_prompt

STRATEGIES = ("ddp", "fsdp")


@dataclass(kw_only=True)
class TrainFields(PromptFields):
    """Fields of every training command (`cfg.model` and `cfg.kl_coef` come from the command)."""

    micro_batch_size: int = arg(8, help="sequences per forward pass and process (gradient accumulation)")
    weight_decay: float = arg(0.0, help="AdamW weight decay")
    grad_clip: float = arg(1.0, help="clip the gradient norm to this (0 = off)")
    lora_rank: int = arg(0, help="LoRA rank (0 = full fine-tuning)")
    lora_alpha: int = arg(16, help="LoRA alpha")
    lora_dropout: float = arg(0.0, help="LoRA dropout")
    lora_targets: list[str] = arg(["all-linear"], help="LoRA target modules")
    bf16: str = arg("auto", help="bf16 autocast: auto (on GPUs that support it), on, off")
    device: str = arg("auto", help="auto (cuda:LOCAL_RANK if available), cpu, cuda")
    threads: int = arg(0, help="torch CPU threads per process (0 = cores / processes)")
    tensorboard: bool = arg(True, help="also log to OUT/tb (needs the tensorboard package)")
    strategy: str = arg("ddp", help="ddp: every process holds the whole model; fsdp: parameters, gradients and "
                                    "optimiser state sharded over the processes (torch FSDP2, docs/scaling.md)")
    gradient_checkpointing: bool = arg(False, help="recompute each decoder layer's activations in the backward pass")
    attn_implementation: str = arg("sdpa", help="attention kernel passed to from_pretrained: sdpa, eager, "
                                                "flash_attention_2 (where installed)")
    trust_remote_code: bool = arg(False, help="let from_pretrained run the model folder's own code")

    def bf16_on(self, device) -> bool:
        """bf16 on GPUs that support it (bf16=auto), always (on) or never (off)."""
        import torch

        if self.bf16 not in ("auto", "on", "off"):
            raise ValueError(f"bf16 must be auto, on or off, not {self.bf16!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {self.strategy!r}")
        return self.bf16 == "on" or (self.bf16 == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())

    def autocast(self, device):
        """bf16 autocast when bf16 is on, under ddp (fsdp: its mixed-precision policy casts instead)."""
        import torch

        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16_on(device) and self.strategy == "ddp")


class Distributed:
    """torch.distributed as set up by torchrun / accelerate launch (WORLD_SIZE, RANK, LOCAL_RANK)."""

    def __init__(self, device: str, group: bool = False):
        """group: set up a process group even for one process (a sharded model needs one)."""
        import tempfile

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
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        self.owns_group = not dist.is_initialized() and (self.world > 1 or group)  # closed by close()
        if self.owns_group and self.world > 1:
            dist.init_process_group(backend)
        elif self.owns_group:  # one process, not launched: a group of one
            self._store_dir = tempfile.TemporaryDirectory()
            dist.init_process_group(backend, store=dist.FileStore(f"{self._store_dir.name}/store", 1), rank=0, world_size=1)

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

        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()



def load_policy(cfg, device):
    """The trainable model in fp32 (LoRA adapters added when lora_rank > 0), unsharded, on device."""
    import torch
    from transformers import AutoModelForCausalLM

    from s2r.models.hf import from_pretrained

    model = from_pretrained(AutoModelForCausalLM, cfg.model, dtype=torch.float32, attn_implementation=cfg.attn_implementation,
                            trust_remote_code=cfg.trust_remote_code).to(device)
    if cfg.lora_rank:
        from peft import LoraConfig, get_peft_model

        targets = cfg.lora_targets[0] if cfg.lora_targets == ["all-linear"] else cfg.lora_targets
        model = get_peft_model(model, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                                 target_modules=targets, task_type="CAUSAL_LM"))
    return model


@contextmanager
def launched(cfg) -> Iterator[Distributed]:
    """A training command's processes: torchrun's / accelerate's group (or one process; a group of one
    under fsdp), each with its share of the CPU threads (cfg.threads, else cores ÷ processes); the
    group is closed when the command ends, however it ends."""
    import torch

    dist_ = Distributed(cfg.device, group=cfg.strategy == "fsdp")
    try:
        torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // dist_.world))
        yield dist_
    finally:
        dist_.close()


def load_models(cfg, dist_: Distributed, ref_model: str | None = None, reference: bool = True):
    """(trainable model, frozen reference or None, tokenizer), initialised after seeding torch with
    cfg.seed; under fsdp both sharded. The reference (`ref_model`, default cfg.model) is kept in bf16
    when bf16 is on (no fp32 copy); with LoRA and the default reference it is the model with its
    adapters disabled (none is returned); with reference=False none is loaded (a caller that reads
    the reference's log-probabilities off the untrained policy)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from s2r.models.hf import from_pretrained
    from s2r.train.sharding import shard

    hf_logging.disable_progress_bar()
    torch.manual_seed(cfg.seed)
    device, bf16 = dist_.device, cfg.bf16_on(dist_.device)
    tokenizer = from_pretrained(AutoTokenizer, cfg.model, trust_remote_code=cfg.trust_remote_code)
    model = load_policy(cfg, device)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False  # training forwards keep no cache (generation asks for one)
    ref = None
    ref_model = ref_model or cfg.model
    if reference and cfg.kl_coef > 0 and (not cfg.lora_rank or ref_model != cfg.model):
        ref = from_pretrained(AutoModelForCausalLM, ref_model, dtype=torch.bfloat16 if bf16 else torch.float32,
                              attn_implementation=cfg.attn_implementation,
                              trust_remote_code=cfg.trust_remote_code).to(device).eval()
        ref.requires_grad_(False)
    if cfg.strategy == "fsdp":
        shard(model, device, dist_.world, bf16)
        if ref is not None:
            shard(ref, device, dist_.world, bf16)
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
    """The model as called for training: DDP-wrapped under several processes (a sharded model as it is)."""
    import torch

    from s2r.train.sharding import fsdp_units

    if dist_.world == 1 or fsdp_units(model):
        return model
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[dist_.device.index] if dist_.device.type == "cuda" else None)


def checkpoint(out: Path, cfg: TrainFields, dist_: Distributed, model, trainable_names: set[str], opt, **state) -> None:
    """Called on every process: OUT/ckpt.pt from process 0 (ddp), or sharded OUT/ckpt/ (fsdp)."""
    from s2r.train.sharding import save_sharded

    if cfg.strategy == "fsdp":
        save_sharded(out / "ckpt", model, opt, dist_, **state)
    elif dist_.main:
        save_checkpoint(out / "ckpt.pt", model, trainable_names, opt, **state)


def resume(out: Path, cfg: TrainFields, key: str, model, opt, device) -> dict | None:
    """The state of the run's checkpoint (same key), weights and optimiser restored; or None."""
    from s2r.train.sharding import load_sharded

    if cfg.strategy == "fsdp":
        return load_sharded(out / "ckpt", key, model, opt)
    return load_checkpoint(out / "ckpt.pt", key, model, opt, device)


@dataclass
class Run:
    """What every training command holds while it trains: AdamW over the trainable parameters, the
    state of the checkpoint it resumed from ({} on a fresh start), the log records that checkpoint
    covers, the model as called for training (DDP-wrapped under several processes), bf16 autocast,
    and the log writer."""

    params: list
    opt: object
    state: dict
    done: int  # steps (or iterations) the checkpoint had taken
    log: list[dict]
    trainable_names: set[str]
    ddp: object
    autocast: object
    run_log: RunLog


def start_run(cfg, out: Path, key: str, model, dist_: Distributed, counter: str, total: int, desc: str,
          unit: str = "step") -> Run:
    """Set a training run up, resumed from OUT's checkpoint of the same run (same key) where there is
    one; `counter` names the state's count of steps taken ("step", "iteration")."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = resume(out, cfg, key, model, opt, dist_.device) or {}
    if "rng" in state:
        torch.set_rng_state(state["rng"])
    done = state.get(counter, 0)
    if done and dist_.main:
        print(f"resuming {desc} at {unit} {done} of {total}", file=sys.stderr)
    log = read_log(out / "log.jsonl", done)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return Run(params, opt, state, done, log, trainable, wrap_ddp(model, dist_), cfg.autocast(dist_.device),
               RunLog(out, log, total, desc, unit, dist_.main, cfg.tensorboard))


def save_model(model, tokenizer, cfg: TrainFields, out: Path, dist_: Distributed) -> None:
    """Called on every process: OUT/model (LoRA: OUT/adapter and the merged model) from process 0.
    A sharded model is gathered into an unsharded copy in process 0's CPU memory first. Its s2r.json
    holds cfg's prompt settings (PromptFields: system, template, review_prompt, assistant_prefix), the
    prompt `s2r eval` then uses by default: a trainer sets cfg.review_prompt / cfg.assistant_prefix."""
    from transformers.utils import logging as hf_logging

    from s2r.train.sharding import fsdp_units, full_state_dict

    hf_logging.disable_progress_bar()
    if fsdp_units(model):
        weights = full_state_dict(model)
        if not dist_.main:
            return
        model = load_policy(cfg, "cpu")
        model.load_state_dict(weights)
    elif not dist_.main:
        return
    if cfg.lora_rank:
        model.save_pretrained(out / "adapter")
        model = model.merge_and_unload()
    model.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    write_model_prompt(out / "model", cfg.prompt_config())  # system, template, review_prompt, assistant_prefix
