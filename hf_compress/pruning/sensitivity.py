"""Sensitivity analysis: how much each layer's pruning hurts, one layer at a time, and a per-layer allocation from it.

For every targeted module and every sparsity level, the module alone is pruned (with the chosen criterion and
pattern), ``eval_fn(model)`` is measured, and the weight is restored exactly. The resulting
:class:`SensitivityTable` prints as a table, and :meth:`SensitivityTable.allocation` turns it into per-layer
sparsities for ``PruningConfig(per_layer=...)`` whose parameter-weighted mean is the target.

```python
from hf_compress import PruningCallback, PruningConfig, sensitivity_analysis

def eval_loss(model):
    return trainer.evaluate()["eval_loss"]

table = sensitivity_analysis(model, eval_loss, sparsities=(0.25, 0.5, 0.75))
print(table)
per_layer = table.allocation(0.5)  # {"^model\\.layers\\.0\\.mlp\\.up_proj$": 0.61, ...}
trainer.add_callback(PruningCallback(PruningConfig(target_sparsity=0.5, per_layer=per_layer)))
```
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from hf_compress.distributed import unwrap_model
from hf_compress.pruning.masks import mask_in_storage_layout
from hf_compress.pruning.patterns import check_pattern_fits, compute_mask, parse_n_m, pattern_family, validate_pattern
from hf_compress.registry import get_registry, validate_name
from hf_compress.targets import find_target_modules, in_out_features, weight_out_in


@dataclass
class LayerSensitivity:
    """One module's measurements.

    Attributes:
        name (`str`): module name.
        params (`int`): weights in the module.
        initial_sparsity (`float`): its fraction of exact zeros before the analysis.
        metrics (`dict[float, float]`): requested sparsity -> ``eval_fn`` with only this module pruned.
        achieved (`dict[float, float]`): requested sparsity -> the module's actual fraction of zeros when measured
            (rounding to whole rows, N:M caps, zeros already present).
    """

    name: str
    params: int
    initial_sparsity: float = 0.0
    metrics: dict[float, float] = field(default_factory=dict)
    achieved: dict[float, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": self.params,
            "initial_sparsity": self.initial_sparsity,
            "metrics": {str(s): v for s, v in self.metrics.items()},
            "achieved": {str(s): v for s, v in self.achieved.items()},
        }


@dataclass
class SensitivityTable:
    """Result of :func:`sensitivity_analysis`: the baseline metric and, per layer, the metric at each sparsity.

    ``str(table)`` is an aligned text table (metric and its increase over the baseline), :meth:`to_markdown` a
    Markdown one, :meth:`to_dict` plain values, :meth:`allocation` per-layer sparsities for a global target.
    """

    baseline: float
    sparsities: tuple[float, ...]
    layers: list[LayerSensitivity]
    pattern: str = "unstructured"
    criterion: str = "magnitude"

    def __getitem__(self, name: str) -> LayerSensitivity:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer {name!r} in the table; layers: {', '.join(layer.name for layer in self.layers[:6])}")

    def increase(self, name: str, sparsity: float) -> float:
        """How much ``eval_fn`` rose over the baseline with only ``name`` pruned at ``sparsity``."""
        return self[name].metrics[sparsity] - self.baseline

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "sparsities": list(self.sparsities),
            "pattern": self.pattern,
            "criterion": self.criterion,
            "layers": [layer.to_dict() for layer in self.layers],
        }

    def _rows(self) -> tuple[list[str], list[list[str]]]:
        header = ["layer", "params"] + [
            f"{s:.0%}" if round(s * 100, 6).is_integer() else f"{s:.1%}" for s in self.sparsities
        ]
        rows = []
        for layer in self.layers:
            cells = [layer.name, str(layer.params)]
            for s in self.sparsities:
                value = layer.metrics[s]
                cells.append(f"{value:.4g} ({value - self.baseline:+.3g})")
            rows.append(cells)
        return header, rows

    def __str__(self) -> str:
        header, rows = self._rows()
        title = (
            f"Sensitivity ({self.criterion}, {self.pattern}): eval_fn with one layer pruned "
            f"(increase over baseline {self.baseline:.4g})"
        )
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        lines = [title]
        for row in [header, *rows]:
            lines.append("  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]))
        return "\n".join(lines)

    def to_markdown(self) -> str:
        header, rows = self._rows()
        lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
        lines += ["| " + " | ".join([f"`{row[0]}`", *row[1:]]) + " |" for row in rows]
        return f"Baseline: {self.baseline:.6g}\n\n" + "\n".join(lines)

    def allocation(self, target: float, max_sparsity: float | None = None) -> dict[str, float]:
        """Per-layer sparsities whose parameter-weighted mean is ``target``, spending loss where it is cheapest.

        Each layer's measured curve (sparsity -> increase of ``eval_fn`` over the baseline, starting at its initial
        sparsity with no increase) is replaced by its lower convex hull, which interpolates linearly between
        measured points. Minimising the summed increase subject to ``sum(params_i * s_i) = target * sum(params_i)``
        is then a fractional knapsack: hull segments are taken in order of increase per pruned parameter (the
        Lagrange multiplier rises until the budget is met), the last one only partly, so the weighted mean equals
        ``target`` exactly (up to float rounding). Sparsities are never extrapolated beyond the largest measured.

        Args:
            target (`float`): the overall sparsity of the analysed layers, in [0, 1).
            max_sparsity (`float`, *optional*): cap for every layer (defaults to the largest measured).

        Returns:
            `dict[str, float]`: ``{"^escaped\\.module\\.name$": sparsity}`` for ``PruningConfig(per_layer=...)``.

        Raises:
            ValueError: ``target`` outside [0, 1), below the layers' current sparsity, or above what the measured
                (and capped) sparsities can reach; or an N:M table (its sparsity is fixed by the pattern).
        """
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0.0 <= target < 1.0:
            raise ValueError(f"target must be a sparsity in [0, 1); got {target!r}")
        if parse_n_m(self.pattern):
            raise ValueError(f"allocation: an N:M pattern ({self.pattern!r}) fixes every layer's sparsity at 1 - N/M")
        if max_sparsity is not None and not 0.0 < max_sparsity < 1.0:
            raise ValueError(f"max_sparsity must be in (0, 1); got {max_sparsity!r}")
        curves = [_convex_curve(layer, self.baseline, max_sparsity) for layer in self.layers]
        total = sum(layer.params for layer in self.layers)
        budget = target * total
        chosen = [curve[0][0] for curve in curves]
        floor = sum(layer.params * s for layer, s in zip(self.layers, chosen))
        ceiling = sum(layer.params * curve[-1][0] for layer, curve in zip(self.layers, curves))
        if budget < floor - 1e-9 * total:
            raise ValueError(f"target {target} is below the layers' current sparsity {floor / total:.6f}")
        if budget > ceiling + 1e-9 * total:
            raise ValueError(
                f"target {target} is above the {ceiling / total:.4f} reachable with the measured sparsities "
                f"{list(self.sparsities)}"
                + (f" capped at max_sparsity={max_sparsity}" if max_sparsity else "")
                + "; measure larger sparsities"
            )
        segments = []  # (increase per pruned parameter, layer index, start sparsity, end sparsity)
        for index, (layer, curve) in enumerate(zip(self.layers, curves)):
            for (x0, y0), (x1, y1) in zip(curve, curve[1:]):
                segments.append(((y1 - y0) / ((x1 - x0) * layer.params), index, x0, x1))
        segments.sort(key=lambda segment: (segment[0], segment[1], segment[2]))
        remaining = budget - floor
        for _, index, x0, x1 in segments:
            if remaining <= 0:
                break
            params = self.layers[index].params
            step = min(x1 - x0, remaining / params)
            chosen[index] = x0 + step
            remaining -= step * params
        return {f"^{re.escape(layer.name)}$": float(s) for layer, s in zip(self.layers, chosen)}


def _convex_curve(layer: LayerSensitivity, baseline: float, cap: float | None) -> list[tuple[float, float]]:
    """Lower convex hull of ``(achieved sparsity, increase)`` points from the initial sparsity, cut at ``cap``."""
    best: dict[float, float] = {layer.initial_sparsity: 0.0}
    for requested, value in layer.metrics.items():
        x = layer.achieved.get(requested, requested)
        if math.isfinite(value) and x > layer.initial_sparsity:
            best[x] = min(best.get(x, math.inf), value - baseline)
    points = sorted(best.items())
    if cap is not None and cap <= layer.initial_sparsity:
        points = points[:1]  # already at or past the cap: stays as it is
    elif cap is not None:
        inside = [p for p in points if p[0] <= cap]
        beyond = [p for p in points if p[0] > cap]
        if beyond and inside[-1][0] < cap:  # interpolate the measured curve at the cap
            (x0, y0), (x1, y1) = inside[-1], beyond[0]
            inside.append((cap, y0 + (y1 - y0) * (cap - x0) / (x1 - x0)))
        points = inside
    hull: list[tuple[float, float]] = []
    for point in points:
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], point) <= 0:
            hull.pop()
        hull.append(point)
    return hull


def _cross(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float]) -> float:
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])


def sensitivity_analysis(
    model: nn.Module,
    eval_fn: Callable[[nn.Module], float],
    sparsities: Sequence[float] = (0.25, 0.5, 0.75),
    pattern: str = "unstructured",
    criterion: str = "magnitude",
    targets: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    *,
    seed: int = 0,
    progress: bool = True,
) -> SensitivityTable:
    """Prune one layer at a time at each sparsity, measure ``eval_fn``, restore the layer: a sensitivity table.

    The model is the same at the end as at the start (weights restored bit for bit, train/eval mode restored), also
    when ``eval_fn`` raises. Layers are pruned with the same criterion and pattern functions as
    :class:`~hf_compress.PruningCallback`; zeros the model already has stay zeros.

    Args:
        model (`nn.Module`): the model to analyse (wrappers are looked through).
        eval_fn (`Callable[[nn.Module], float]`): the metric, lower is better (e.g. an evaluation loss). Called once
            for the baseline and once per layer and sparsity. With a data-dependent criterion (statistics from
            forward hooks), the baseline call is also what feeds it.
        sparsities (`Sequence[float]`): the levels to measure, each in (0, 1).
        pattern (`str`): ``"unstructured"``, ``"row"``, ``"N:M"`` like ``"2:4"`` or a plugin pattern (``"head"``
            spans several modules and is not analysed layer by layer).
        criterion (`str`): a criterion computed without training: ``"magnitude"``, ``"random"`` or a plugin's
            (``"movement"`` needs gradients accumulated over training steps).
        targets (`list[str]`, *optional*): regexes of module names to analyse; default every Linear/Conv1D of
            the model body. exclude (`list[str]`, *optional*): regexes of module names to skip.
        seed (`int`): seed of the ``random`` criterion.
        progress (`bool`): show a tqdm progress bar.

    Returns:
        [`SensitivityTable`]

    Example:

    ```python
    >>> import torch
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> from hf_compress import sensitivity_analysis
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
    ...                                      num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2))
    >>> batch = torch.randint(0, 64, (2, 16))
    >>> def eval_loss(m):
    ...     with torch.no_grad():
    ...         return m(input_ids=batch, labels=batch).loss.item()
    >>> table = sensitivity_analysis(model, eval_loss, sparsities=(0.5, 0.9), progress=False)
    >>> len(table.layers), table.sparsities
    (7, (0.5, 0.9))
    >>> per_layer = table.allocation(0.5)

    ```
    """
    pattern = validate_pattern(pattern, "pattern")
    if pattern_family(pattern) == "head":
        raise ValueError(
            "pattern: 'head' prunes whole heads across several modules and cannot be analysed one module at a time; "
            "allowed here: 'unstructured', 'row', 'N:M' like '2:4', or a plugin pattern"
        )
    criterion = validate_name("pruning_criterion", criterion, "criterion")
    criterion_class = get_registry().get("pruning_criterion", criterion)
    if getattr(criterion_class, "uses_gradients", False):
        raise ValueError(
            f"criterion: {criterion!r} scores weights from gradients accumulated during training, which a "
            "sensitivity analysis does not run; use 'magnitude', 'random' or a forward-statistics criterion"
        )
    sparsities = _check_sparsities(sparsities)
    model = unwrap_model(model)
    modules = find_target_modules(model, targets, exclude)
    for name, module in modules.items():
        check_pattern_fits(pattern, name, in_out_features(module)[0], "pattern")
    was_training = model.training

    scorer = criterion_class(seed=seed)
    scorer.attach(modules)
    try:
        baseline = _as_metric(eval_fn(model), "the baseline")
    finally:
        scorer.detach()
    if not math.isfinite(baseline):
        raise ValueError(f"eval_fn returned {baseline} for the unpruned model; it must return a finite number")

    layers = []
    bar = tqdm(total=len(modules) * len(sparsities), desc="sensitivity", disable=not progress, leave=False)
    try:
        for name, module in modules.items():
            bar.set_postfix_str(name, refresh=False)
            weight = module.weight
            original = weight.detach().clone()
            keep = weight_out_in(original, module) != 0
            layer = LayerSensitivity(name, weight.numel(), 1.0 - int(keep.sum()) / keep.numel())
            scores = scorer.scores(name, module).detach().float().to(original.device)
            try:
                for sparsity in sparsities:
                    mask = compute_mask(scores, sparsity, pattern, keep=keep)
                    with torch.no_grad():
                        weight.data.mul_(mask_in_storage_layout(mask, module).to(weight.dtype))
                    layer.achieved[sparsity] = 1.0 - int(mask.sum()) / mask.numel()
                    layer.metrics[sparsity] = _as_metric(eval_fn(model), f"{name} at sparsity {sparsity}")
                    with torch.no_grad():
                        weight.data.copy_(original)
                    bar.update(1)
            finally:
                with torch.no_grad():
                    weight.data.copy_(original)
                model.train(was_training)
            layers.append(layer)
    finally:
        bar.close()
    return SensitivityTable(baseline, sparsities, layers, pattern=pattern, criterion=criterion)


def _check_sparsities(sparsities: Sequence[float]) -> tuple[float, ...]:
    values = tuple(sparsities) if isinstance(sparsities, (list, tuple)) else None
    if not values or any(isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s < 1 for s in values):
        raise ValueError(f"sparsities must be a non-empty list of numbers in (0, 1); got {sparsities!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"sparsities must not repeat a value; got {sparsities!r}")
    return tuple(sorted(float(s) for s in values))


def _as_metric(value: Any, where: str) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"eval_fn must return one number (lower is better); got a tensor of shape {value.shape}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"eval_fn must return a number (lower is better) for {where}; got {value!r}")
    return float(value)
