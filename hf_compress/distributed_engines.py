"""Weights under the training engines: plain/DDP, FSDP2 (``DTensor`` shards) and DeepSpeed ZeRO-1/2/3.

Re-exported by :mod:`hf_compress.distributed`; technique code calls these and never asks which engine runs.

- Reading: :func:`gathered_weights` makes ``module.weight`` whole for the duration of a ``with`` block (ZeRO-3:
  ``deepspeed.zero.GatheredParameters``, for the modules named only, never the whole model). FSDP2 weights stay
  DTensors; read them with :func:`~hf_compress.distributed.full_tensor`. :func:`weight_shape` gives the real shape
  of a parameter even outside a gather (ZeRO-3 keeps it in ``ds_shape``).
- Writing: :func:`multiply_weight_`, :func:`map_weight_` and :func:`copy_weight_` change every copy of a parameter:
  the module's tensor (its local FSDP2 shard, or its local ZeRO-3 partition) and, under ZeRO-1/2/3, the
  optimizer's fp32 master (``deepspeed.utils.safe_*_fp32_param``), which DeepSpeed copies back into the model
  after every step; a write to the model's tensor alone would be undone.
- Keeping a tensor shaped like a parameter (a pruning mask) the way the engine partitions the parameter:
  :func:`partition_like` cuts it (ZeRO-3: this rank's flat piece; FSDP2: its shard's rows),
  :func:`whole_from_partition` gathers it back, :func:`multiply_by_partition_` multiplies every copy by it.
- :func:`deepspeed_zero_stage` reads the engine from the parameters themselves (ZeRO-3: ``ds_id``; ZeRO-1/2:
  the optimizer's ``_hp_mapping`` link), so callbacks need nothing but the model the Trainer hands them.

Gradients: under DeepSpeed the Trainer's ``accelerator.backward`` runs ``engine.step()`` (clip, step, zero_grad)
before ``on_pre_optimizer_step``, so no callback event sees gradients; :func:`gradients_visible_to_callbacks` says so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.distributed as dist
from torch import nn


def is_zero3_parameter(param: torch.Tensor) -> bool:
    """A DeepSpeed ZeRO-3 partitioned parameter (empty outside a gather; real shape in ``ds_shape``)."""
    return hasattr(param, "ds_id") and hasattr(param, "ds_tensor")


def is_partitioned(param: torch.Tensor) -> bool:
    """Each rank holds only a piece of this parameter: an FSDP2 ``DTensor`` shard or a ZeRO-3 partition (so every
    rank must take part in each forward, e.g. ``generate(synced_gpus=True)``)."""
    from hf_compress.distributed import is_sharded

    return is_sharded(param) or is_zero3_parameter(param)


def has_fp32_master(param: torch.Tensor) -> bool:
    """The parameter belongs to a DeepSpeed ZeRO-1/2 (or bf16) optimizer with an fp32 master. The attribute is set on
    every rank; it is None where this rank's partition holds none of the parameter (it still joins the collective)."""
    return hasattr(param, "_hp_mapping")


def deepspeed_zero_stage(params: Iterable[torch.Tensor]) -> int | None:
    """3 for ZeRO-3 partitioned parameters, 2 for ones linked to a ZeRO-1/2 optimizer, None otherwise."""
    stage = None
    for param in params:
        if is_zero3_parameter(param):
            return 3
        if has_fp32_master(param):
            stage = 2
    return stage


def gradients_visible_to_callbacks(params: Iterable[torch.Tensor]) -> bool:
    """False under DeepSpeed: its ``engine.step()`` has consumed and zeroed the gradients before any callback event."""
    return deepspeed_zero_stage(params) is None


def supports_partial_forward(params: Iterable[torch.Tensor]) -> bool:
    """False under ZeRO-3: its parameter prefetcher records the module order of the first forward and fails a later
    forward that stops early (as block-by-block calibration does)."""
    return deepspeed_zero_stage(params) != 3


def weights_swappable_in_forward(params: Iterable[torch.Tensor]) -> bool:
    """False under ZeRO-3: a partitioned weight is materialised only inside DeepSpeed's own module hooks, so a
    forward that puts another tensor in its place (fake quantization) breaks the partitioning."""
    return deepspeed_zero_stage(params) != 3


def weight_shape(param: torch.Tensor) -> torch.Size:
    """The parameter's full shape, also for a ZeRO-3 parameter outside a gather and for an FSDP2 shard."""
    if is_zero3_parameter(param):
        return torch.Size(param.ds_shape)
    return param.shape


@contextlib.contextmanager
def gathered_weights(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Inside the block each module's ``weight`` is whole (ZeRO-3: gathered, read-only; released on exit).

    A collective under ZeRO-3: every rank enters it with the same modules. Elsewhere it does nothing. Gather a few
    modules at a time (one is the usual), never the whole model.
    """
    params = [module.weight for module in modules if is_zero3_parameter(module.weight)]
    if not params:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        yield


def _zero3_partition_slice(param: torch.Tensor, full: torch.Tensor, pad_value: float) -> torch.Tensor:
    """This rank's piece of ``full`` (shaped like the whole parameter) laid out as its flat ZeRO-3 partition."""
    partition_numel = param.ds_tensor.ds_numel
    index = dist.get_rank(group=param.ds_process_group)
    flat = full.reshape(-1)
    start = index * partition_numel
    piece = flat[start : start + partition_numel]
    if piece.numel() < partition_numel:  # the last partition is padded
        pad = torch.full((partition_numel - piece.numel(),), pad_value, dtype=flat.dtype, device=flat.device)
        piece = torch.cat([piece, pad])
    return piece


def _update_every_copy(
    param: torch.Tensor,
    local_update: Callable[[torch.Tensor, Callable[[torch.Tensor, float], torch.Tensor]], torch.Tensor],
) -> None:
    """Apply ``local_update(values, piece_of)`` to each copy of ``param``: ``values`` is a copy's local tensor,
    ``piece_of(full, pad)`` cuts a tensor shaped like the whole parameter to the elements ``values`` holds; the
    update returns the new values."""
    from hf_compress.distributed import local_tensor, shard_like

    with torch.no_grad():
        if is_zero3_parameter(param):
            from deepspeed.utils import safe_get_local_fp32_param, safe_set_local_fp32_param

            def piece_of(full, pad=0.0):
                return _zero3_partition_slice(param, full, pad)

            local = param.ds_tensor.data
            local.copy_(local_update(local, piece_of).to(local.dtype))
            master = safe_get_local_fp32_param(param)
            if master is not None:
                safe_set_local_fp32_param(param, local_update(master.reshape(-1), piece_of).float())
            return
        local = local_tensor(param.data)

        def piece_of(full, pad=0.0):
            return shard_like(full, param)

        local.copy_(local_update(local, piece_of).to(local.dtype))
        if has_fp32_master(param):
            from deepspeed.utils import safe_get_full_fp32_param, safe_set_full_fp32_param

            master = safe_get_full_fp32_param(param)  # a collective (all-reduce of the fragments)

            def whole(full, pad=0.0):
                return full

            safe_set_full_fp32_param(param, local_update(master, whole).float())


def partition_like(param: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """The elements of ``full`` (shaped like the whole parameter, in its storage layout) that this rank holds of
    ``param``: its flat ZeRO-3 partition piece (the last partition padded with ones), the rows of its FSDP2 shard, or
    ``full`` itself. A mask kept this way costs a rank what its weight partition costs. No communication."""
    from hf_compress.distributed import shard_like

    if is_zero3_parameter(param):
        return _zero3_partition_slice(param, full, 1).clone()
    return shard_like(full, param)


def whole_from_partition(param: torch.Tensor, piece: torch.Tensor) -> torch.Tensor:
    """The whole tensor back from every rank's :func:`partition_like` piece: a collective under ZeRO-3 (an
    all-gather) and FSDP2 (a ``DTensor`` with the parameter's mesh and placements, made whole), so every rank calls
    it for the same parameters in the same order."""
    as_bytes = piece.to(torch.uint8)  # gloo has no bool collectives
    if is_zero3_parameter(param):
        group = param.ds_process_group
        pieces = [torch.empty_like(as_bytes) for _ in range(dist.get_world_size(group=group))]
        dist.all_gather(pieces, as_bytes, group=group)
        return torch.cat(pieces)[: param.ds_numel].reshape(param.ds_shape).to(piece.dtype)
    from hf_compress.distributed import is_sharded

    if is_sharded(param):
        from torch.distributed.tensor import DTensor

        shape = param.shape
        stride = torch.empty(shape, device="meta").stride()
        sharded = DTensor.from_local(
            as_bytes, param.device_mesh, param.placements, run_check=False, shape=shape, stride=stride
        )
        return sharded.full_tensor().to(piece.dtype)
    return piece


def multiply_by_partition_(param: torch.Tensor, piece: torch.Tensor) -> None:
    """``param *= factor`` on every copy, given ``piece = partition_like(param, factor)``; under ZeRO-3 and FSDP2 no
    communication (ZeRO-1/2 read and write the full fp32 master, a collective)."""

    def update(values, piece_of):  # every copy holds the piece's elements (ZeRO-1/2's master: the whole)
        return values * piece.to(device=values.device).reshape(values.shape).to(values.dtype)

    _update_every_copy(param, update)


def multiply_weight_(param: torch.Tensor, factor: torch.Tensor) -> None:
    """``param *= factor`` on every copy; ``factor`` is shaped like the whole parameter (e.g. a bool keep mask in
    the parameter's storage layout), on every rank."""

    def update(values, piece_of):
        piece = piece_of(factor.to(device=values.device), 1.0)
        return values * piece.reshape(values.shape).to(values.dtype)

    _update_every_copy(param, update)


def copy_weight_(param: torch.Tensor, value: torch.Tensor) -> None:
    """``param[...] = value`` on every copy; ``value`` is the whole parameter, identical on every rank."""

    def update(values, piece_of):
        return piece_of(value.to(device=values.device, dtype=values.dtype), 0.0).reshape(values.shape)

    _update_every_copy(param, update)


def map_weight_(param: torch.Tensor, elementwise: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """``param = elementwise(param)`` on every copy, for a function of each element alone (``f(0) == 0``, so the
    padding of a ZeRO-3 partition stays zero)."""

    def update(values, piece_of):
        return elementwise(values.clone())

    _update_every_copy(param, update)


def deepspeed_offload_devices(deepspeed_config) -> dict[str, str]:
    """``{"offload_optimizer": device, "offload_param": device}`` for offloads switched on in a DeepSpeed config
    (a dict or a path; ``TrainingArguments.deepspeed``), empty when none is or there is no config."""
    if not deepspeed_config:
        return {}
    if isinstance(deepspeed_config, str):
        import json

        with open(deepspeed_config) as handle:
            deepspeed_config = json.load(handle)
    zero = (deepspeed_config or {}).get("zero_optimization") or {}
    found = {}
    for key in ("offload_optimizer", "offload_param"):
        device = (zero.get(key) or {}).get("device", "none")
        if device not in (None, "none"):
            found[key] = device
    return found
