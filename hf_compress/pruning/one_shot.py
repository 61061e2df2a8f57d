"""One-shot pruning from calibration batches, before (or instead of) gradual pruning.

``method="sparsegpt"`` removes weights and updates the rest to reconstruct each layer's outputs (see
:mod:`hf_compress.pruning.reconstruction`); ``method="magnitude"`` only removes the smallest weights; any other
registered ``pruning_criterion`` (a plugin's too, e.g. ``"wanda"``) scores the weights after the calibration batches
ran through the model with the criterion attached. SparseGPT runs
block by block: the layers of transformer block ``k`` see inputs produced by blocks ``0..k-1`` as already pruned, as
in the paper and llm-compressor (the calibration passes are in :mod:`~hf_compress.pruning.one_shot_calibration`).
A one-shot mask is a good start for fine-tuning: hold it with ``PruningCallback(PruningConfig(schedule="constant",
...))`` and recover with ``DistillationCallback``.

```python
from hf_compress import DistillationCallback, DistillationConfig, PruningCallback, PruningConfig, prune_one_shot

prune_one_shot(model, calibration_batches, sparsity=0.7)  # or pattern="2:4"
trainer = Trainer(model=model, args=args, train_dataset=train_dataset, callbacks=[
    PruningCallback(PruningConfig(target_sparsity=0.7, schedule="constant")),
    DistillationCallback(teacher, DistillationConfig(alpha=0.5, temperature=2.0)),
])
trainer.train()
```

Inside a Trainer (calibration batches taken from its train dataloader), or in a recipe
(``callbacks: [{name: one_shot_pruning, sparsity: 0.7}]``), use :class:`OneShotPruningCallback`, listed before
``PruningCallback``.
"""

from __future__ import annotations

import itertools
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn
from transformers import TrainerCallback

from hf_compress.config_base import check_choice, check_number
from hf_compress.distributed import (
    all_reduce_mean_,
    full_tensor,
    gathered_weights,
    supports_partial_forward,
    unwrap_model,
    weight_shape,
)
from hf_compress.pruning.masks import apply_masks_, mask_sparsity, module_sparsity, write_weight_
from hf_compress.pruning.one_shot_calibration import (
    calibration_inputs,
    group_by_block,
    input_hessians,
    run_calibration,
)
from hf_compress.pruning.patterns import check_pattern_fits, compute_mask, pattern_final_sparsity, validate_pattern
from hf_compress.pruning.reconstruction import reconstruct_pruned
from hf_compress.registry import get_registry, validate_name
from hf_compress.targets import find_target_modules, in_out_features, weight_out_in
from hf_compress.trainer.logs import add_to_logs

logger = logging.getLogger(__name__)

ONE_SHOT_METHODS = ("sparsegpt", "magnitude")  # plus every registered pruning_criterion
COMPARISON_GROUPS = ("layer", "row")


def _check_inputs(
    sparsity: float, pattern: str, method: str, block_size: int, dampening: float, comparison: str = "layer"
) -> str:
    check_number("sparsity", sparsity, low=0.0, high=1.0, high_inclusive=False)
    if not isinstance(method, str) or method.lower() not in ONE_SHOT_METHODS:
        try:
            name = validate_name("pruning_criterion", method, "method")
        except ValueError as error:
            allowed = ", ".join(repr(m) for m in ONE_SHOT_METHODS)
            raise ValueError(f"method must be {allowed} or a registered pruning_criterion; {error}") from None
        criterion = get_registry().get("pruning_criterion", name)
        if criterion.uses_gradients:
            raise ValueError(
                f"method={method!r} scores from gradients, which one-shot pruning does not compute; allowed: "
                f"{', '.join(ONE_SHOT_METHODS)} or a criterion that scores from weights and activations"
            )
    check_choice("comparison", comparison, COMPARISON_GROUPS)
    check_number("block_size", block_size, low=1, integer=True)
    check_number("dampening", dampening, low=0.0)
    pattern = validate_pattern(pattern)
    if pattern != "unstructured" and ":" not in pattern:
        raise ValueError(f"pattern must be 'unstructured' or an N:M pattern such as '2:4'; got {pattern!r}")
    return pattern


def _row_wise_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep the top ``1 - sparsity`` scores of every output row (Wanda's per-output comparison group)."""
    prune_per_row = int(round(sparsity * scores.shape[1]))
    keep = torch.ones_like(scores, dtype=torch.bool)
    if prune_per_row:
        lowest = torch.topk(scores, prune_per_row, dim=1, largest=False).indices
        keep.scatter_(1, lowest, False)
    return keep


def _criterion_masks(inner, modules, batches, sparsity, pattern, method, comparison) -> dict[str, torch.Tensor]:
    criterion = get_registry().get("pruning_criterion", method.lower())()
    criterion.attach(modules)
    try:
        if criterion.data_dependent and run_calibration(inner, batches) == 0:
            raise ValueError(f"calibration_batches: method={method!r} needs at least one batch of model inputs")
    finally:
        criterion.detach()
    for tensor in criterion.local_statistics().values():
        all_reduce_mean_(tensor)
    masks = {}
    for name, module in modules.items():
        scores = criterion.scores(name, module)
        if pattern == "unstructured" and comparison == "row":
            masks[name] = _row_wise_mask(scores, sparsity)
        else:
            masks[name] = compute_mask(scores, sparsity, pattern)
    apply_masks_(modules, masks)
    return masks


@torch.no_grad()
def prune_one_shot(
    model: nn.Module,
    calibration_batches: Iterable[Mapping[str, torch.Tensor]],
    sparsity: float = 0.5,
    pattern: str = "unstructured",
    *,
    method: str = "sparsegpt",
    targets: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    block_size: int = 128,
    dampening: float = 0.01,
    comparison: str = "layer",
) -> dict[str, torch.Tensor]:
    """Prune ``model`` in place, once; return the keep masks (``{module name: bool [out, in]}``).

    Args:
        model (`nn.Module`): a transformers model (or one wrapped by DDP / a PeftModel); its targeted Linear and
            Conv1D weights are changed in place.
        calibration_batches: model inputs (dicts of tensors; ``labels`` are dropped). SparseGPT runs them once per
            transformer block; magnitude ignores them.
        sparsity (`float`): fraction removed in every layer, in [0, 1). N:M patterns remove ``1 - N/M``.
        pattern (`str`): ``"unstructured"`` or an N:M pattern such as ``"2:4"``.
        method (`str`): ``"sparsegpt"`` (reconstruct the layer outputs), ``"magnitude"``, or any registered
            ``pruning_criterion`` that scores from weights and activations (e.g. the wanda plugin's ``"wanda"``).
        targets / exclude: regexes of module names, as in ``PruningConfig``.
        block_size (`int`): SparseGPT columns whose masks are chosen together (128 in the paper).
        dampening (`float`): SparseGPT ridge, a fraction of the mean diagonal of each layer's input Hessian.
        comparison (`str`): for a criterion and unstructured masks, ``"layer"`` (lowest scores of the layer) or
            ``"row"`` (each output row keeps its own top scores, as Wanda does).

    Under ``accelerate launch`` every rank calls it with its own batches: the Hessians are averaged across ranks, so
    every rank ends with the same weights.
    """
    pattern = _check_inputs(sparsity, pattern, method, block_size, dampening, comparison)
    inner = unwrap_model(model)
    modules = find_target_modules(inner, targets, exclude)
    if not modules:
        raise ValueError("targets/exclude: no Linear or Conv1D module of the model is selected for pruning")
    for name, module in modules.items():
        check_pattern_fits(pattern, name, in_out_features(module)[0])
        if not bool(torch.isfinite(module.weight.detach()).all()):
            raise ValueError(f"{name}: the weight holds NaN or inf values; prune_one_shot changed nothing")
    if method == "magnitude":
        masks = {}
        for name, m in modules.items():
            with gathered_weights([m]):  # ZeRO-3: one module at a time
                masks[name] = compute_mask(
                    weight_out_in(full_tensor(m.weight.detach()), m).abs().float(), sparsity, pattern
                )
        apply_masks_(modules, masks)
        return masks
    if method.lower() != "sparsegpt":
        return _criterion_masks(inner, modules, calibration_batches, sparsity, pattern, method, comparison)

    if not supports_partial_forward(module.weight for module in modules.values()):
        raise ValueError(
            "method='sparsegpt': not supported under DeepSpeed ZeRO-3, which cannot run the block-by-block "
            "calibration forwards; use method='magnitude', ZeRO-2, or PruningConfig(criterion='sparsegpt')"
        )
    device = next(inner.parameters()).device
    batches = calibration_inputs(calibration_batches, device)
    was_training, use_cache = inner.training, getattr(inner.config, "use_cache", None)
    inner.eval()
    if use_cache is not None:
        inner.config.use_cache = False
    masks = {}
    original: dict[str, torch.Tensor] = {}  # all or nothing: a CPU copy of each weight before it changes
    current = None
    try:
        for block_name, names in group_by_block(modules):
            block = dict(inner.named_modules()).get(block_name) if block_name not in modules else None
            current = block_name
            hessians = input_hessians(inner, names, modules, batches, block)
            for name in names:
                current = name
                module = modules[name]
                with gathered_weights([module]):
                    weight = weight_out_in(full_tensor(module.weight.detach()), module).float().clone()
                pruned, masks[name] = reconstruct_pruned(
                    weight, hessians.pop(name), sparsity, pattern, block_size=block_size, dampening=dampening
                )
                original[name] = module.weight.detach().to("cpu", copy=True)
                write_weight_(module, pruned)
            logger.debug("SparseGPT pruned %s (%d layers)", block_name, len(names))
    except Exception as error:
        for name, saved in original.items():
            modules[name].weight.detach().copy_(saved.to(modules[name].weight.device))
        kind = ValueError if isinstance(error, ValueError) else RuntimeError
        raise kind(f"prune_one_shot failed at {current}: {error}; every weight is back as it was") from error
    finally:
        inner.train(was_training)
        if use_cache is not None:
            inner.config.use_cache = use_cache
    return masks


class CalibratedOneShotCallback(TrainerCallback, ABC):
    """Base of callbacks that prune once at train begin from the first ``calibration_batches`` batches of the
    Trainer's train dataloader (each rank its own); plugins' one-shot pruners subclass it too.

    Subclasses set ``name`` (recipe name, also the log key prefix) and implement :meth:`prune`. On resume
    (``global_step > 0``) nothing happens: the checkpoint holds the pruned weights. The share of pruned weights is
    logged under ``log_key``.
    """

    name = "one_shot"
    log_key = "one_shot_sparsity"

    def __init__(self, calibration_batches: int = 8) -> None:
        check_number("calibration_batches", calibration_batches, low=1, integer=True)
        self.calibration_batches = calibration_batches
        self.masks: dict[str, torch.Tensor] = {}

    @abstractmethod
    def prune(self, model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Prune ``model`` in place from ``batches``; return the keep masks (``{module name: bool [out, in]}``)."""

    def before_pruning(self, model: nn.Module) -> None:
        """A check on the model right before :meth:`prune` (nothing by default)."""

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        if state.global_step > 0:
            return
        if train_dataloader is None:
            raise ValueError(f"{self.name} needs the Trainer's train_dataloader for its calibration batches")
        self.before_pruning(model)
        self.masks = self.prune(model, itertools.islice(iter(train_dataloader), self.calibration_batches))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and self.masks:
            total = sum(mask.numel() for mask in self.masks.values())
            pruned = sum(mask.numel() * mask_sparsity(mask) for mask in self.masks.values())
            add_to_logs(self, args, state, logs, {self.log_key: pruned / total})


class OneShotPruningCallback(CalibratedOneShotCallback):
    """Prunes once at train begin with :func:`prune_one_shot`, calibrated on the first ``calibration_batches``
    batches of the Trainer's train dataloader (each rank its own; Hessians are averaged across ranks).

    List it before ``PruningCallback(PruningConfig(schedule="constant", target_sparsity=same))``, which then holds
    the zeros through fine-tuning. On resume (``global_step > 0``) it does nothing: the checkpoint holds the pruned
    weights. Recipe form: ``callbacks: [{name: one_shot_pruning, sparsity: 0.7, calibration_batches: 16}]``.
    """

    name = "one_shot_pruning"
    log_key = "one_shot_sparsity"

    def __init__(
        self,
        sparsity: float = 0.5,
        pattern: str = "unstructured",
        method: str = "sparsegpt",
        calibration_batches: int = 8,
        targets: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        block_size: int = 128,
        dampening: float = 0.01,
        comparison: str = "layer",
    ) -> None:
        self.pattern = _check_inputs(sparsity, pattern, method, block_size, dampening, comparison)
        super().__init__(calibration_batches)
        self.sparsity, self.method, self.comparison = sparsity, method, comparison
        self.targets, self.exclude, self.block_size, self.dampening = targets, exclude, block_size, dampening

    def before_pruning(self, model: nn.Module) -> None:
        modules = find_target_modules(unwrap_model(model), self.targets, self.exclude)
        total = sum(weight_shape(m.weight).numel() for m in modules.values())
        zeros = sum(module_sparsity(m) * weight_shape(m.weight).numel() for m in modules.values())
        requested = pattern_final_sparsity(self.pattern) or self.sparsity
        if total and requested > 0 and zeros / total >= requested:
            raise ValueError(
                f"one_shot_pruning: the targeted weights are already {zeros / total:.1%} zero at train begin; list "
                "OneShotPruningCallback before PruningCallback in callbacks=[...] so it prunes the dense model"
            )

    def prune(self, model, batches):
        return prune_one_shot(
            model,
            batches,
            self.sparsity,
            self.pattern,
            method=self.method,
            targets=self.targets,
            exclude=self.exclude,
            block_size=self.block_size,
            dampening=self.dampening,
            comparison=self.comparison,
        )
