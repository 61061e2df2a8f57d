"""One-shot Wanda pruning from calibration batches, as a function and as a Trainer callback.

Both run hf_compress's own one-shot pruner with the ``wanda`` criterion (``plugin_api.prune_one_shot(...,
method="wanda")``): the calibration loop, the all-reduce of activation norms and the masks are hf_compress's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from hf_compress import plugin_api

COMPARISON_GROUPS = ("row", "layer")


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
    return plugin_api.prune_one_shot(
        model,
        calibration_batches,
        sparsity,
        pattern,
        method="wanda",
        comparison=comparison,
        targets=targets,
        exclude=exclude,
    )


class WandaOneShotCallback(plugin_api.CalibratedOneShotCallback):
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
        plugin_api.check_number("sparsity", sparsity, low=0.0, high=1.0, high_inclusive=False)
        plugin_api.check_choice("comparison", comparison, COMPARISON_GROUPS)
        super().__init__(calibration_batches)
        self.sparsity = sparsity
        self.pattern = plugin_api.validate_pattern(pattern)
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
