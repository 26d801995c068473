"""`--strategy fsdp`: parameters, gradients and optimiser state sharded over the processes with
torch FSDP2 (`fully_shard`), one decoder layer per unit, then the root (embeddings, final norm, head).

- Mixed precision on GPUs (bf16 on): `MixedPrecisionPolicy(param_dtype=bfloat16, reduce_dtype=float32)`
  keeps fp32 master weights in the shards, all-gathers and computes in bf16 and reduces gradients
  in fp32; the root casts its output (the logits) to fp32. On CPUs everything stays fp32.
- Every process must call a sharded model's forward the same number of times: each forward
  all-gathers the parameters unit by unit. `lockstep` pads a process's micro-batches with zero-weight
  ones up to the count of the process with most. Generation (a different number of decoding steps per
  process) runs inside `unsharded`: the full parameters are gathered once, kept through the whole
  decoding loop (no collective per step), and freed after: the memory of one replicated model for
  the duration of the rollouts, and no change to the decoding loop.
- Checkpoints are sharded (`torch.distributed.checkpoint`: each process writes and reads its own
  shards of the weights and the optimiser state); the saved model is gathered on process 0 into
  the usual `save_pretrained` folder.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import torch


def decoder_layers(model) -> list[torch.nn.Module]:
    """The model's decoder layers: modules of the classes its transformers model names in
    `_no_split_modules` (what accelerate and TRL wrap as FSDP units)."""
    from transformers import PreTrainedModel

    hf = next(m for m in model.modules() if isinstance(m, PreTrainedModel))
    names = set(hf._no_split_modules or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(f"{type(hf).__name__} names no decoder layer class (_no_split_modules): cannot shard it")
    return layers


def mixed_policy(bf16: bool, root: bool = False):
    """bf16 parameters and compute, fp32 gradient reduction (master weights stay fp32 in the shards);
    the root also returns fp32 logits. Without bf16: the parameters' own dtype throughout."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if not bf16:
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32,
                                output_dtype=torch.float32 if root else None)


def shard(model, device: torch.device, world: int, bf16: bool):
    """fully_shard every decoder layer, then the root, over all processes (in place; returns model)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (world,))
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=mixed_policy(bf16), reshard_after_forward=True)
    fully_shard(model, mesh=mesh, mp_policy=mixed_policy(bf16, root=True), reshard_after_forward=True)
    return model


def fsdp_units(*models) -> list:
    from torch.distributed.fsdp import FSDPModule

    return [m for model in models if model is not None for m in model.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def unsharded(*models):
    """Full parameters on every process for the duration (gathered once, freed after), so forwards
    inside issue no collective and processes may call them a different number of times. A no-op
    for models that are not sharded."""
    units = fsdp_units(*models)
    for u in units:
        u.set_reshard_after_forward(False, recurse=False)
        u.unshard()
    try:
        yield
    finally:
        for u in units:
            u.reshard()
            u.set_reshard_after_forward(True, recurse=False)


def lockstep(chunks: list, filler, dist_, on: bool) -> tuple[list, list[float]]:
    """(chunks, weight of each): this process's chunks at weight 1, then `filler` at weight 0 up to
    the number every process runs: the most of any process when `on` (sharded models: a forward is
    a collective), else at least one (a process with nothing still joins the gradient all-reduce)."""
    n = max(dist_.gather(len(chunks))) if on else len(chunks)
    n = max(n, 1)
    return chunks + [filler] * (n - len(chunks)), [1.0] * len(chunks) + [0.0] * (n - len(chunks))


def clip_grads(params, max_norm: float) -> float:
    """Clip the gradients' global norm to max_norm (0 = off); the norm before clipping. Works on
    sharded gradients (DTensors: the norm is reduced over the processes)."""
    from torch.distributed.tensor import DTensor

    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
    if isinstance(norm, DTensor):
        norm = norm.full_tensor()
    return norm.item()


def optimiser_step(opt, params, max_norm: float) -> float:
    """One optimiser update from the accumulated gradients: clip (clip_grads), step, clear; the norm
    before clipping."""
    norm = clip_grads(params, max_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return norm


def local_bytes(tensors) -> int:
    """Bytes this process holds of these tensors (its shard of a DTensor)."""
    from torch.distributed.tensor import DTensor

    return sum((t.to_local() if isinstance(t, DTensor) else t).nbytes for t in tensors if isinstance(t, torch.Tensor))


def memory_bytes(model, ref, opt) -> dict[str, int]:
    """Parameter bytes (model and reference) and optimiser-state bytes held by this process."""
    params = list(model.parameters()) + (list(ref.parameters()) if ref is not None else [])
    return {"param_bytes": local_bytes(params),
            "optimizer_bytes": local_bytes(v for s in opt.state.values() for v in s.values())}


# ----------------------------------------------------------------------------------- checkpoints


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(ignore_frozen_params=True, **kw)


def save_sharded(folder: Path, model, opt, dist_, **state) -> None:
    """Every process writes its shards of the trainable weights and the optimiser into a new
    folder/NNNNNNNN (torch.distributed.checkpoint), process 0 `state` (key, step, ...) beside them;
    then folder/latest, written atomically, names it, and the older ones are removed. A kill at any
    point leaves `latest` naming a complete checkpoint. Several nodes need a shared file system."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    from s2r.jsonl import write_atomic

    latest = folder / "latest"
    n = int(latest.read_text()) + 1 if latest.exists() else 0
    target = folder / f"{n:08d}"
    if dist_.main and target.exists():  # a killed save
        shutil.rmtree(target)
    dist_.barrier()
    msd, osd = get_state_dict(model, opt, options=_options())
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(target))
    if dist_.main:
        torch.save(state, target / "state.pt")
    dist_.barrier()
    if dist_.main:
        write_atomic(latest, str(n))
        for old in folder.iterdir():
            if old.is_dir() and old != target:
                shutil.rmtree(old)
    dist_.barrier()


def load_sharded(folder: Path, key: str, model, opt) -> dict | None:
    """Restore each process's shards from the checkpoint folder/latest names, if it is of the same
    run (same key); its state, or None."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    if not (folder / "latest").exists():
        return None
    target = folder / f"{int((folder / 'latest').read_text()):08d}"
    state = torch.load(target / "state.pt", weights_only=False)
    if state["key"] != key:
        return None
    msd, osd = get_state_dict(model, opt, options=_options())
    both = {"model": msd, "optim": osd}
    dcp.load(both, checkpoint_id=str(target))
    set_state_dict(model, opt, model_state_dict=both["model"], optim_state_dict=both["optim"], options=_options(strict=False))
    return state


def full_state_dict(model) -> dict:
    """The whole model's weights, gathered on process 0 (in CPU memory); {} on the others."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
