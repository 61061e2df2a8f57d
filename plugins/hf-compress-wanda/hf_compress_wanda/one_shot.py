"""One-shot Wanda pruning from calibration batches, as a function and as a Trainer callback."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from hf_compress.config_base import check_number
from hf_compress.distributed import all_reduce_mean_, unwrap_model
from hf_compress.pruning.masks import apply_masks_
from hf_compress.pruning.one_shot import CalibratedOneShotCallback
from hf_compress.pruning.patterns import compute_mask, validate_pattern
from hf_compress.targets import find_target_modules
from hf_compress_wanda.criterion import WandaCriterion

COMPARISON_GROUPS = ("row", "layer")


def _row_wise_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep the top ``1 - sparsity`` weights of every output row (Wanda's per-output comparison group)."""
    prune_per_row = int(round(sparsity * scores.shape[1]))
    keep = torch.ones_like(scores, dtype=torch.bool)
    if prune_per_row:
        lowest = torch.topk(scores, prune_per_row, dim=1, largest=False).indices
        keep.scatter_(1, lowest, False)
    return keep


@torch.no_grad()
def prune_one_shot(
    model: nn.Module,
    calibration_batches: Iterable[Mapping[str, torch.Tensor]],
    sparsity: float = 0.5,
    pattern: str = "unstructured",
    *,
    comparison: str = "row",
    targets: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Prune ``model`` in place with Wanda and return the keep masks (``{module name: bool [out, in]}``).

    Args:
        model (`nn.Module`): a transformers model; its targeted Linear/Conv1D weights are zeroed in place.
        calibration_batches: model inputs (dicts of tensors, ``labels`` ignored) to collect activation norms on.
        sparsity (`float`): fraction of weights to remove per layer, in [0, 1). Ignored for N:M (``1 - N/M``).
        pattern (`str`): ``"unstructured"`` or an N:M pattern such as ``"2:4"``.
        comparison (`str`): ``"row"`` (the paper: each output row keeps its own top weights) or ``"layer"``.
        targets / exclude: regexes of module names, as in ``PruningConfig``.

    Example:

    ```python
    >>> masks = prune_one_shot(model, [{"input_ids": ids}], sparsity=0.5)  # doctest: +SKIP
    ```
    """
    check_number("sparsity", sparsity, low=0.0, high=1.0, high_inclusive=False)
    pattern = validate_pattern(pattern)
    if pattern not in ("unstructured",) and ":" not in pattern:
        raise ValueError(f"pattern must be 'unstructured' or an N:M pattern like '2:4' for Wanda; got {pattern!r}")
    if comparison not in COMPARISON_GROUPS:
        raise ValueError(f"comparison must be one of {', '.join(map(repr, COMPARISON_GROUPS))}; got {comparison!r}")
    inner = unwrap_model(model)
    modules = find_target_modules(inner, targets, exclude)
    criterion = WandaCriterion()
    criterion.attach(modules)
    was_training = inner.training
    inner.eval()
    try:
        seen = 0
        for batch in calibration_batches:
            inputs = {k: v.to(inner.device) for k, v in batch.items() if k != "labels" and torch.is_tensor(v)}
            inner(**inputs)
            seen += 1
        if seen == 0:
            raise ValueError("calibration_batches: at least one batch is needed to measure activation norms")
    finally:
        criterion.detach()
        inner.train(was_training)
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


class WandaOneShotCallback(CalibratedOneShotCallback):
    """Prunes once with Wanda at train begin, from the first ``calibration_batches`` batches of the train dataloader.

    Pair it with ``PruningCallback(PruningConfig(schedule="constant", target_sparsity=same))`` to hold the zeros
    while fine-tuning: PruningCallback measures the model's initial sparsity, so the Wanda mask is kept.

    Recipe form: ``callbacks: [{name: wanda_one_shot, sparsity: 0.5, pattern: "2:4", calibration_batches: 8}]``.
    """

    name = "wanda_one_shot"
    log_key = "wanda_one_shot_sparsity"

    def __init__(
        self,
        sparsity: float = 0.5,
        pattern: str = "unstructured",
        calibration_batches: int = 8,
        comparison: str = "row",
        targets: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
    ) -> None:
        check_number("sparsity", sparsity, low=0.0, high=1.0, high_inclusive=False)
        if comparison not in COMPARISON_GROUPS:
            raise ValueError(
                f"comparison must be one of {', '.join(map(repr, COMPARISON_GROUPS))}; got {comparison!r}"
            )
        super().__init__(calibration_batches)
        self.sparsity = sparsity
        self.pattern = validate_pattern(pattern)
        self.comparison = comparison
        self.targets = targets
        self.exclude = exclude

    def prune(self, model, batches):
        return prune_one_shot(
            model,
            batches,
            self.sparsity,
            self.pattern,
            comparison=self.comparison,
            targets=self.targets,
            exclude=self.exclude,
        )
