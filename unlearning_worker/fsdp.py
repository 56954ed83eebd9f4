"""What the engine's run does differently when its weights are sharded with FSDP over several processes
(started by unlearning_worker.distributed, which says how such a run differs from one process).

Pure: torch only; no Django, no environment reads.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from unlearning_worker.spec import UnlearningSpec

# Methods whose every step runs the same forwards on every process (a process that skipped a block's
# forward would leave the others waiting in its reduce-scatter), tested with two processes.
METHODS = ("counterfactual", "grad_diff", "ga")


def active() -> tuple[int, int] | None:
    """(rank, world size) inside a sharded run of more than one process, else None."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_rank(), dist.get_world_size()
    return None


def check_spec(spec: UnlearningSpec) -> None:
    unsupported = [name for name, on in (
        ("lora", spec.lora), ("saliency < 1", spec.saliency < 1.0), ("noise_scale", spec.noise_scale > 0),
        ("adversary_every", bool(spec.adversary_every)), ("checkpoint_every", bool(spec.checkpoint_every)),
        ("rank_candidates", bool(spec.rank_candidates)),
    ) if on]
    if spec.method not in METHODS:
        unsupported.append(f"method {spec.method} (sharded runs: {', '.join(METHODS)})")
    if unsupported:
        raise ValueError(f"not supported in a sharded (FSDP) run: {', '.join(unsupported)}")


def shard(model: Any, device: torch.device) -> None:
    """Shard `model` in place over the process group: each block Hugging Face keeps whole
    (`_no_split_modules`), then the root, which holds the embeddings and whatever is left."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    block_types = set(getattr(model, "_no_split_modules", None) or ())
    blocks = [m for m in model.modules() if type(m).__name__ in block_types]
    if not blocks:
        raise ValueError("the model declares no transformer block type (_no_split_modules) to shard by")
    for block in blocks:
        fully_shard(block, mesh=mesh)
    # The root too gives its gathered weights back after each forward (FSDP keeps the root's by default):
    # the optimiser, the snapshots and the rollbacks must always see the sharded parameters, and an
    # evidence check (a forward without backward) would otherwise leave the root's weights gathered.
    fully_shard(model, mesh=mesh, reshard_after_forward=True)


def split(indices: list[int]) -> list[int]:
    """This process's share of a step's batch; a batch smaller than the world is computed by every
    process (the average of equal gradients is that gradient)."""
    world = active()
    if world is None or len(indices) < world[1]:
        return indices
    rank, size = world
    return indices[rank::size]


def _reduced(value: int, op: Any) -> int:
    """`value` reduced with `op` over every process (itself outside a sharded run)."""
    if active() is None:
        return value
    # NCCL reduces device tensors only; gloo host tensors
    on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    held = torch.tensor([value], device=on)
    dist.all_reduce(held, op=op)
    return int(held.item())


def agreed(flag: bool) -> bool:
    """True on every process when it is true on any (cancellation)."""
    return bool(_reduced(1 if flag else 0, dist.ReduceOp.MAX))


def least(value: int) -> int:
    """The smallest of every process's `value` (a size every process must use alike: each pass of a
    sharded model is a collective, so every process must run as many)."""
    return _reduced(value, dist.ReduceOp.MIN)


def full_state_dict(model: Any) -> dict[str, Any] | None:
    """The whole model's weights on process 0 (on the CPU), None elsewhere; every process must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dist.get_rank() != 0:
        return None
    # a tied weight (the output layer that is the input embedding) is written once, as save_pretrained does
    tied = {n for n, _ in model.named_parameters(remove_duplicate=False)} - {n for n, _ in model.named_parameters()}
    return {name: value for name, value in state.items() if name not in tied}
