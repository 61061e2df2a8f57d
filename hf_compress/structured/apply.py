"""Structured pruning without a Trainer: score, choose a shape (or search one for a budget), mask, shrink.

```python
>>> import torch
>>> from transformers import LlamaConfig, LlamaForCausalLM
>>> from hf_compress import StructuredPruningConfig, shrink_to
>>> model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
...                                      num_attention_heads=4, num_key_value_heads=2, head_dim=8))
>>> ids = torch.randint(0, 64, (2, 16))
>>> batches = [{"input_ids": ids, "labels": ids}]
>>> config = StructuredPruningConfig(shape={"num_key_value_heads": 1, "intermediate_size": 32, "num_hidden_layers": 3})
>>> small = shrink_to(model, config, batches)
>>> small.config.num_key_value_heads, small.config.intermediate_size, small.config.num_hidden_layers
(1, 32, 3)

```
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn

from hf_compress.distributed import all_reduce_mean_, unwrap_model
from hf_compress.structured.config import StructuredPruningConfig
from hf_compress.structured.criteria import StructureScores, _run
from hf_compress.structured.families import Family, Shape, family_of
from hf_compress.structured.refit import refit_writers_, writer_input_grams
from hf_compress.structured.rotation import rotate_hidden_, rotation_refusal
from hf_compress.structured.selection import merge_scores, resolve_shape, select_structures
from hf_compress.structured.shrink import shrink
from hf_compress.structured.structures import StructureSelection, zero_structures_

logger = logging.getLogger(__name__)


@dataclass
class SearchResult:
    """The budget search: every candidate with its parameters and calibration loss, and the choice."""

    target_params: int
    candidates: list[dict] = field(default_factory=list)
    chosen: dict | None = None

    def to_dict(self) -> dict:
        return {"target_params": self.target_params, "candidates": self.candidates, "chosen": self.chosen}


def score_structures(
    family: Family, config: StructuredPruningConfig, batches: list[dict], *, width: bool = True, depth: bool = True
) -> StructureScores:
    """Width and depth importance from the config's criteria over ``batches`` (summed across ranks)."""
    width_criterion, depth_criterion = config.make_criteria()
    width_scores = depth_scores = None
    if width:
        if width_criterion.needs_batches or width_criterion.needs_gradients:
            width_criterion.observe(family, batches)
        width_scores = width_criterion.scores(family)
    if depth:
        depth_criterion.observe(family, batches)
        depth_scores = depth_criterion.scores(family)
    return merge_scores(width_scores, depth_scores).all_reduce_()


def _uniform_shape(family: Family, ratio: float, *, layers: int, round_to: int) -> Shape:
    before = family.shape()
    target = {"num_hidden_layers": layers, "intermediate_size": max(1, round(ratio * before.intermediate))}
    if family.explicit_head_dim:
        if before.num_kv_heads > 1:
            target["num_key_value_heads"] = max(1, round(ratio * before.num_kv_heads))
        else:
            target["num_attention_heads"] = max(1, round(ratio * before.num_heads))
        target["hidden_size"] = max(1, round(ratio * before.hidden))
    else:
        target["num_attention_heads"] = max(1, round(ratio * before.num_heads))
    return resolve_shape(family, target, round_to=round_to)[0]


def _heads_kept_shape(family: Family, hidden: int, mlp_ratio: float, *, layers: int, round_to: int) -> Shape:
    before = family.shape()
    target = {
        "num_hidden_layers": layers,
        "hidden_size": hidden,
        "intermediate_size": max(1, round(mlp_ratio * before.intermediate)),
    }
    return resolve_shape(family, target, round_to=round_to)[0]


def _largest_within(family: Family, budget: int, shape_at) -> Shape | None:
    """``shape_at(ratio)`` at the largest ratio in [0, 1] (bisection) that fits ``budget`` parameters, or None."""
    if family.parameters_of(shape_at(0.0)) > budget:
        return None
    low, high = 0.0, 1.0
    for _ in range(20):
        middle = (low + high) / 2
        if family.parameters_of(shape_at(middle)) <= budget:
            low = middle
        else:
            high = middle
    return shape_at(low)


# hidden sizes of the kept-heads candidates, as fractions of the uniform cut's at the same depth: with the residual
# stream rotated onto its principal axes (hidden_rotation), narrow streams lose little; on the issue-13 dev split
# the narrowest candidate whose MLP could fill the budget recovered best at both 0.40x and 0.26x of the parameters
KEEP_HEADS_HIDDEN_FRACTIONS = (1.0, 0.875, 0.75, 0.625, 0.5)


def budget_candidates(
    family: Family, target_params: int, count: int, round_to: int, keep_heads: bool = True
) -> list[Shape]:
    """Candidate uniform shapes within ``target_params``, for ``count`` depths from all layers down to half.

    At each depth: the shape that cuts heads, MLP and hidden size by one ratio fitted to the budget and, with
    ``keep_heads`` where heads have their own size (explicit ``head_dim``), shapes that keep every attention head at
    :data:`KEEP_HEADS_HIDDEN_FRACTIONS` of that hidden size and take the rest of the budget from the MLP (Minitron's
    width-pruned Llama-3.1-4B kept all heads, too); one whose MLP cannot grow enough to use 95% of the budget is
    skipped.

    Raises:
        ValueError: the target is below the smallest or above the largest shape; the message names both bounds.
    """
    before = family.shape()
    smallest = family.parameters_of(_uniform_shape(family, 0.0, layers=1, round_to=1))
    total = family.parameters_of(before)
    if not smallest <= target_params < total:
        raise ValueError(
            f"target_params={target_params} is unreachable for {type(family.model).__name__}: uniform shapes range "
            f"from {smallest} parameters (1 layer, one head, one neuron) to {total} (the model itself); nearest valid "
            f"targets: {smallest if target_params < smallest else total - 1} (or as a fraction "
            f"{max(smallest / total, 1e-6):.4f}..{(total - 1) / total:.4f})"
        )
    depths = sorted({max(1, round(before.num_layers * (1 - 0.5 * k / max(1, count - 1)))) for k in range(count)})
    shapes = []
    for layers in sorted(depths, reverse=True):
        uniform = _largest_within(
            family, target_params, partial(_uniform_shape, family, layers=layers, round_to=round_to)
        )
        if uniform is None:
            continue
        found = [uniform]
        cuts_heads = (uniform.num_heads, uniform.num_kv_heads) != (before.num_heads, before.num_kv_heads)
        if keep_heads and family.explicit_head_dim and cuts_heads:
            for fraction in KEEP_HEADS_HIDDEN_FRACTIONS:
                hidden = max(1, round(uniform.hidden * fraction))
                heads_kept = partial(_heads_kept_shape, family, hidden, layers=layers, round_to=round_to)
                kept = _largest_within(family, target_params, heads_kept)
                if kept is not None and family.parameters_of(kept) >= 0.95 * target_params:
                    found.append(kept)
        for shape in found:
            if shape not in shapes:  # snapping can map two fractions to one shape
                shapes.append(shape)
    return shapes


def calibration_loss(model: nn.Module, batches: list[dict]) -> float:
    """Mean loss of ``model`` over ``batches`` (averaged across ranks)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        losses = [float(_run(model, batch)) for batch in batches]
    model.train(was_training)
    return float(all_reduce_mean_(torch.tensor(sum(losses) / len(losses))))


def short_distillation_(student: nn.Module, teacher: nn.Module, batches: list[dict], steps: int, lr: float = 1e-3):
    """``steps`` AdamW steps of KL(teacher || student) on the logits, cycling over ``batches`` (Minitron's short
    distillation used to rank candidate shapes)."""
    if steps <= 0:
        return
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    student.train()
    teacher.eval()
    for step in range(steps):
        batch = {k: v for k, v in batches[step % len(batches)].items() if k != "labels"}
        with torch.no_grad():
            target = _run_logits(teacher, batch)
        logits = _run_logits(student, batch)
        loss = nn.functional.kl_div(
            logits.log_softmax(-1).flatten(0, -2),
            target.log_softmax(-1).flatten(0, -2),
            log_target=True,
            reduction="batchmean",
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    student.zero_grad(set_to_none=True)


def _run_logits(model: nn.Module, batch: dict) -> torch.Tensor:
    device = next(model.parameters()).device
    return model(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}).logits.float()


def search_shape(
    model: nn.Module,
    config: StructuredPruningConfig,
    batches: list[dict],
    scores: StructureScores,
    grams: dict[str, torch.Tensor] | None = None,
) -> tuple[Shape, SearchResult]:
    """Minitron-style budget search: for each candidate shape, prune a copy, shrink it, distil it for
    ``config.search_steps`` steps and score it on the calibration loss; the lowest loss wins."""
    family = family_of(model)
    total = family.parameters_of(family.shape())
    target = config.target_params
    target = int(target * total) if isinstance(target, float) else int(target)
    result = SearchResult(target_params=target)
    best = None
    candidates = budget_candidates(
        family, target, config.search_candidates, config.round_to, keep_heads=config.search_keep_heads
    )
    for shape in candidates:
        candidate = copy.deepcopy(unwrap_model(model)).requires_grad_(True)  # our own copy: a frozen teacher too
        candidate_family = family_of(candidate)
        selection = select_structures(candidate_family, scores, shape)
        if grams is not None:
            refit_writers_(candidate_family, selection, grams)
        small = zero_and_shrink_(candidate, selection, config.round_to)
        short_distillation_(small, model, batches, config.search_steps)
        loss = calibration_loss(small, batches)
        row = {"shape": shape.to_dict(), "params": family.parameters_of(shape), "calibration_loss": loss}
        result.candidates.append(row)
        logger.warning("hf_compress structured search: %s", row)
        if best is None or loss < best[0]:
            best = (loss, shape, row)
    result.chosen = best[2]
    return best[1], result


def zero_and_shrink_(model: nn.Module, selection: StructureSelection, round_to: int) -> nn.Module:
    """Zero ``selection`` in ``model`` and remove it physically (in place); returns the smaller model."""
    family = family_of(model)
    zero_structures_or_skip_(family, selection)
    drop = selection.layers if not family.pre_norm else None
    return shrink(model, round_to=round_to, drop_layers=drop, inplace=True)


def zero_structures_or_skip_(family: Family, selection: StructureSelection) -> None:
    """Zero the selection; on post-norm families layers are left for ``shrink(drop_layers=...)``."""
    if family.pre_norm:
        zero_structures_(family, selection)
    else:
        zero_structures_(family, StructureSelection(**{**selection.__dict__, "layers": []}))


def cuts_hidden(family: Family, config: StructuredPruningConfig) -> bool:
    """Whether the config's shape (or a budget search) may remove hidden channels."""
    if config.shape is None:
        return True
    return config.shape.get("hidden_size", family.shape().hidden) < family.shape().hidden


def rotation_wanted(family: Family, config: StructuredPruningConfig) -> bool:
    """Whether structured pruning rotates the residual stream first (``config.hidden_rotation``).

    Raises:
        ValueError: ``hidden_rotation="pca"`` on a model that cannot be rotated, naming why.
    """
    if config.hidden_rotation == "none" or not cuts_hidden(family, config):
        return False
    refusal = rotation_refusal(family)
    if refusal is not None and config.hidden_rotation == "pca":
        raise ValueError(refusal)
    return refusal is None


def rotate_if_wanted_(model: nn.Module, config: StructuredPruningConfig, batches: list[dict]) -> torch.Tensor | None:
    """Rotate ``model``'s residual stream in place when ``config`` wants it (:func:`rotation_wanted`).

    Returns:
        The share of the stream's energy each rotated channel carries (for :func:`rotation_message`), or None.
    """
    if not rotation_wanted(family_of(model), config):
        return None
    return rotate_hidden_(model, batches)


def rotation_message(shares: torch.Tensor, kept: int) -> str:
    return (
        f"hidden_rotation: hidden channels cut along the principal axes of the residual stream; the {kept} kept "
        f"carry {100 * float(shares[:kept].sum()):.1f}% of its calibration energy"
    )


@dataclass
class OneShotChoice:
    """What one-shot pruning chose: the shape, the structures that go, the messages and the budget search."""

    shape: Shape
    selection: StructureSelection
    messages: list[str]
    search: SearchResult | None


def choose_one_shot_(model: nn.Module, config: StructuredPruningConfig, batches: list[dict]) -> OneShotChoice:
    """One-shot pruning up to the masks, on ``model`` in place: rotate the residual stream (when wanted), score,
    pick the shape (or search one for ``target_params``), select the lowest-scoring structures and refit the
    writers for them (``refit_writers``). Zeroing the selection, then :func:`shrink`, finishes the job."""
    family = family_of(model)
    shares = rotate_if_wanted_(model, config, batches)
    was_training = model.training
    model.eval()
    scores = score_structures(family, config, batches, depth=needs_depth(family, config))
    grams = writer_input_grams(family, batches) if config.refit_writers else None
    shape, messages, search = target_shape(model, config, batches, scores, grams)
    model.train(was_training)
    selection = select_structures(family, scores, shape)
    if grams is not None:
        refit_writers_(family, selection, grams)
    if shares is not None:
        messages.append(rotation_message(shares, shape.hidden))
    return OneShotChoice(shape, selection, messages, search)


def target_shape(
    model: nn.Module,
    config: StructuredPruningConfig,
    batches: list[dict],
    scores: StructureScores,
    grams: dict[str, torch.Tensor] | None = None,
) -> tuple[Shape, list[str], SearchResult | None]:
    family = family_of(model)
    if config.shape is not None:
        shape, messages = resolve_shape(family, config.shape, round_to=config.round_to)
        return shape, messages, None
    shape, result = search_shape(model, config, batches, scores, grams)
    return shape, [], result


def needs_depth(family: Family, config: StructuredPruningConfig) -> bool:
    if config.shape is not None:
        return config.shape.get("num_hidden_layers", family.shape().num_layers) < family.shape().num_layers
    return True


def shrink_to(
    model: nn.Module, config: StructuredPruningConfig, batches: Iterable[dict], *, return_details: bool = False
):
    """Score on ``batches``, pick the config's shape (or search one for ``target_params``), and return a smaller
    copy of ``model`` (``model`` itself is left as it was). No recovery training: follow with distillation.

    Returns:
        The smaller model, or ``(model, details)`` with ``return_details`` (shape, messages, search, selection).
    """
    family_of(model)  # refuses a model it cannot shrink before copying it
    small = copy.deepcopy(unwrap_model(model))  # rotated and cut in place: the caller's model stays as it was
    choice = choose_one_shot_(small, config, list(batches))
    for message in choice.messages:
        logger.warning("hf_compress structured: %s", message)
    small = zero_and_shrink_(small, choice.selection, config.round_to)
    if not return_details:
        return small
    details = {
        "shape": choice.shape.to_dict(),
        "messages": choice.messages,
        "search": None if choice.search is None else choice.search.to_dict(),
        "selection": choice.selection.to_dict(),
    }
    return small, details


def fraction_of_parameters(model: nn.Module, reference: nn.Module) -> float:
    count = lambda m: sum(p.numel() for p in {id(p): p for p in m.parameters()}.values())  # noqa: E731
    return count(model) / count(reference) if count(reference) else math.nan
