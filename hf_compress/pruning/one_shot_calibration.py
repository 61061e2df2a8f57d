"""The calibration forward passes of one-shot pruning: the batches as model inputs, the targeted modules grouped by
transformer block, the input Hessians of one block's modules, and a plain run that a criterion's hooks observe.

Used by :func:`hf_compress.pruning.one_shot.prune_one_shot`; plugins call :func:`run_calibration` (through
:mod:`hf_compress.plugin_api`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from hf_compress.distributed import all_reduce_mean_
from hf_compress.pruning.sparsegpt_criterion import SharedInputGram
from hf_compress.targets import in_out_features

_BLOCK = re.compile(r"^(.*?\.\d+)(?:\.|$)")


class _BlockDone(Exception):
    """Raised after the block being calibrated ran: the rest of the forward pass is not needed."""


def group_by_block(modules: dict[str, nn.Module]) -> list[tuple[str, list[str]]]:
    """Target module names grouped by transformer block (the first numbered path, e.g. ``model.layers.3``), in
    forward order; modules outside numbered blocks form one group each, after the blocks."""
    groups: dict[str, list[str]] = {}
    for name in modules:
        match = _BLOCK.match(name)
        groups.setdefault(match.group(1) if match else name, []).append(name)
    return sorted(groups.items(), key=lambda item: _BLOCK.match(item[0]) is None)


@torch.no_grad()
def input_hessians(
    model: nn.Module, names: list[str], modules: dict[str, nn.Module], batches: list[dict], block: nn.Module | None
) -> dict[str, torch.Tensor]:
    """``sum x x^T`` over every calibration token entering each named module (mean over ranks)."""
    hessians = {}
    for name in names:
        features = in_out_features(modules[name])[0]
        hessians[name] = torch.zeros(features, features, device=modules[name].weight.device)
    seen: set[str] = set()
    gram = SharedInputGram()

    def accumulate(name):
        def hook(module, inputs, output):
            product, _ = gram(inputs[0])
            hessians[name].add_(product.to(hessians[name].device))
            seen.add(name)

        return hook

    def stop(module, inputs, output):
        raise _BlockDone

    hooks = [modules[name].register_forward_hook(accumulate(name)) for name in names]
    if block is not None:
        hooks.append(block.register_forward_hook(stop))
    try:
        for index, batch in enumerate(batches):
            try:
                model(**batch)
            except _BlockDone:
                pass
            except Exception as error:
                raise ValueError(
                    f"calibration_batches[{index}]: the model's forward failed on this batch (keys "
                    f"{sorted(batch)}): {type(error).__name__}: {error}"
                ) from error
    finally:
        for hook in hooks:
            hook.remove()
        gram.clear()
    for name, hessian in hessians.items():
        if name not in seen:
            raise ValueError(f"calibration: module {name!r} received no input during the calibration forward passes")
        all_reduce_mean_(hessian)
    return hessians


@torch.no_grad()
def run_calibration(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]]) -> int:
    """Run ``batches`` (``labels`` dropped) through ``model`` in eval mode, without cache; restore both after.

    Returns how many batches ran. Hooks attached beforehand (a criterion's) see every calibration token.
    """
    device = next(model.parameters()).device
    was_training, use_cache = model.training, getattr(getattr(model, "config", None), "use_cache", None)
    model.eval()
    if use_cache is not None:
        model.config.use_cache = False
    seen = 0
    try:
        for batch in batches:
            model(
                **{key: value.to(device) for key, value in batch.items() if key != "labels" and torch.is_tensor(value)}
            )
            seen += 1
    finally:
        model.train(was_training)
        if use_cache is not None:
            model.config.use_cache = use_cache
    return seen


def calibration_inputs(calibration_batches, device: torch.device) -> list[dict[str, torch.Tensor]]:
    """The batches as model inputs on ``device`` (``labels`` dropped); a batch that is not a mapping of tensors is an
    error naming its index."""
    batches = []
    for index, batch in enumerate(calibration_batches):
        if not isinstance(batch, Mapping):
            raise ValueError(
                f"calibration_batches[{index}]: expected a dict of model inputs (e.g. input_ids, attention_mask), "
                f"got {type(batch).__name__}"
            )
        inputs = {key: value.to(device) for key, value in batch.items() if key != "labels" and torch.is_tensor(value)}
        if not inputs:
            raise ValueError(
                f"calibration_batches[{index}]: holds no tensor model inputs (keys: {sorted(map(str, batch))})"
            )
        batches.append(inputs)
    if not batches:
        raise ValueError("calibration_batches: SparseGPT needs at least one batch of model inputs")
    return batches
