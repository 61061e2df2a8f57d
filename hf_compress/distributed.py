"""Everything that talks across processes lives here; technique code never calls ``torch.distributed`` itself.

Works the same single-process (every function is then a no-op or an identity), under DDP launched by
``accelerate launch`` or ``torchrun``, and with FSDP2 (``fully_shard``) where parameters are ``DTensor`` shards.

Collectives go through accelerate (``PartialState``, ``reduce``, ``broadcast``, ``gather_object``) whenever its
process state describes the running process group, which is the case under the Trainer and ``accelerate launch``;
a process group that accelerate does not know (one a script set up by hand) is served by ``torch.distributed``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _accelerate_state():
    """accelerate's ``PartialState`` when it drives the running process group, else None."""
    if not is_distributed():
        return None
    from accelerate import PartialState
    from accelerate.utils import DistributedType

    state = PartialState()
    if state.distributed_type == DistributedType.NO or state.num_processes != dist.get_world_size():
        return None
    return state


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    return rank() == 0


def barrier() -> None:
    state = _accelerate_state()
    if state is not None:
        state.wait_for_everyone()
    elif is_distributed():
        dist.barrier()


def shutdown() -> None:
    """Wait for every rank, then tear the process group down.

    Call it last in a script run by ``accelerate launch``: a process that exits with gloo still up can abort
    with "terminate called without an active exception" while its peer is mid-collective.
    """
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def _all_reduce_(tensor: torch.Tensor, reduction: str) -> torch.Tensor:
    if not is_distributed():
        return tensor
    if _accelerate_state() is not None:
        from accelerate.utils import reduce

        return tensor.copy_(reduce(tensor, reduction=reduction))
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.div_(dist.get_world_size()) if reduction == "mean" else tensor


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum across ranks (identity when single-process)."""
    return _all_reduce_(tensor, "sum")


def all_reduce_mean_(tensor: torch.Tensor) -> torch.Tensor:
    """In-place mean across ranks (identity when single-process)."""
    return _all_reduce_(tensor, "mean")


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """In-place broadcast from ``src`` (identity when single-process)."""
    if _accelerate_state() is not None:
        from accelerate.utils import broadcast

        broadcast(tensor, from_process=src)
    elif is_distributed():
        dist.broadcast(tensor, src=src)
    return tensor


def all_gather_objects(obj):
    """A list with every rank's ``obj`` (``[obj]`` when single-process)."""
    if not is_distributed():
        return [obj]
    if _accelerate_state() is not None:
        from accelerate.utils import gather_object

        return gather_object([obj])  # accelerate flattens one level: one list item per rank
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's model inside DDP / DataParallel / accelerate / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def is_sharded(tensor: torch.Tensor) -> bool:
    """True for an FSDP2 ``DTensor`` parameter (each rank holds a shard)."""
    return type(tensor).__name__ == "DTensor" or hasattr(tensor, "to_local") and hasattr(tensor, "placements")


def local_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The part of ``tensor`` this rank holds: the local shard of an FSDP2 DTensor, else the tensor itself."""
    if is_sharded(tensor):
        return tensor.to_local()
    return tensor


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor: gathered from the shards of an FSDP2 DTensor (collective), else the tensor itself."""
    if is_sharded(tensor):
        return tensor.full_tensor()
    return tensor


def shard_like(full: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The piece of ``full`` that lines up with this rank's local shard of ``reference`` (an FSDP2 DTensor).

    FSDP2 shards dim 0 with ``torch.chunk`` semantics; other placements are not supported.
    """
    if not is_sharded(reference):
        return full
    from torch.distributed.tensor import Shard

    placements = reference.placements
    if len(placements) != 1 or not isinstance(placements[0], Shard) or placements[0].dim != 0:
        raise ValueError(f"only FSDP2 dim-0 sharding is supported for masks; got placements {placements}")
    mesh = reference.device_mesh
    chunks = torch.chunk(full, mesh.size(), dim=0)
    index = mesh.get_local_rank()
    if index < len(chunks):
        return chunks[index]
    return full[:0]


# Engine-aware weight access (DeepSpeed ZeRO-1/2/3, FSDP2) lives in hf_compress/distributed_engines.py
from hf_compress.distributed_engines import (  # noqa: E402, F401
    copy_weight_,
    deepspeed_offload_devices,
    deepspeed_zero_stage,
    gathered_weights,
    gradients_visible_to_callbacks,
    is_partitioned,
    map_weight_,
    multiply_by_partition_,
    multiply_weight_,
    partition_like,
    supports_partial_forward,
    weight_shape,
    weights_swappable_in_forward,
    whole_from_partition,
)
