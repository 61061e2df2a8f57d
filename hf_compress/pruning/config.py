"""``PruningConfig``: what to prune, how much, when and how. Every field is checked when the config is built."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from hf_compress.config_base import (
    CompressionConfig,
    check_bool,
    check_choice,
    check_number,
    check_regex_list,
    check_step_spec,
)
from hf_compress.pruning.patterns import parse_n_m, pattern_final_sparsity, validate_pattern

logger = logging.getLogger(__name__)

SCOPES = ("layer", "global")


@dataclass
class PruningConfig(CompressionConfig):
    """Configuration of gradual pruning with :class:`~hf_compress.PruningCallback`.

    Args:
        target_sparsity (`float`, *optional*): final fraction of zero weights in the targeted modules, in [0, 1).
            Required, except with an N:M pattern, whose final sparsity is ``1 - N/M`` (a different value is an error).
        schedule (`str`, defaults to `"cubic"`): registry name of the schedule: constant, one_shot, linear, cubic,
            exponential, cosine, or a plugin's.
        start (`int` or `float`, defaults to `0`): first mask update: optimizer step (int) or fraction of the run.
        end (`int` or `float`, defaults to `0.75`): last mask update, where the target is reached.
        frequency (`int`, defaults to `10`): optimizer steps between mask updates (> 0).
        initial_sparsity (`float`, *optional*): the sparsity the ramp starts from; None measures it from the model
            (its exact zeros are kept either way).
        criterion (`str`, defaults to `"magnitude"`): magnitude, movement, random, or a plugin's.
        criterion_kwargs (`dict`, *optional*): options passed to the criterion class.
        pattern (`str`, defaults to `"unstructured"`): unstructured, row, head, or N:M like ``"2:4"``.
        scope (`str`, defaults to `"layer"`): ``"layer"`` (each module reaches the scheduled sparsity) or
            ``"global"`` (one threshold across the modules).
        targets (`list[str]`, *optional*): regexes of module names to prune (default: every Linear/Conv1D of the
            model body). exclude (`list[str]`, *optional*): regexes of module names to leave alone.
        per_layer (`dict[str, float]`, *optional*): ``{regex: sparsity}`` overriding the target for matching modules
            (the first matching regex wins); they are ramped on the same schedule and left out of the global pool.
        mask_gradients (`bool`, defaults to `False`): also zero the gradients of pruned weights before each step.
        seed (`int`, defaults to `0`): seed of the ``random`` criterion.

    ```python
    >>> from hf_compress import PruningConfig
    >>> config = PruningConfig(target_sparsity=0.8, schedule="cubic", start=0.1, end=0.7, frequency=50)
    >>> PruningConfig(pattern="2:4").final_sparsity
    0.5

    ```
    """

    target_sparsity: float | None = None
    schedule: str = "cubic"
    start: int | float = 0
    end: int | float = 0.75
    frequency: int = 10
    initial_sparsity: float | None = None
    criterion: str = "magnitude"
    criterion_kwargs: dict[str, Any] | None = None
    pattern: str = "unstructured"
    scope: str = "layer"
    targets: list[str] | None = None
    exclude: list[str] | None = None
    per_layer: dict[str, float] | None = None
    mask_gradients: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        from hf_compress.registry import get_registry, validate_name

        pattern_sparsity = pattern_final_sparsity(validate_pattern(self.pattern, "pattern"))
        if self.target_sparsity is None:
            if pattern_sparsity is None:
                raise ValueError(
                    "target_sparsity is required: a number in [0, 1) (or use an N:M pattern like '2:4', whose "
                    "sparsity is 1 - N/M)"
                )
        else:
            check_number("target_sparsity", self.target_sparsity, low=0.0, high=1.0, high_inclusive=False)
            if pattern_sparsity is not None and abs(self.target_sparsity - pattern_sparsity) > 1e-9:
                raise ValueError(
                    f"target_sparsity: pattern {self.pattern!r} fixes the final sparsity at 1 - N/M = "
                    f"{pattern_sparsity}; got target_sparsity={self.target_sparsity}. Leave it unset or set it to "
                    f"{pattern_sparsity}"
                )
        validate_name("schedule", self.schedule, "schedule")
        check_step_spec("start", self.start)
        check_step_spec("end", self.end)
        if isinstance(self.start, int) == isinstance(self.end, int) and self.end < self.start:
            raise ValueError(
                f"end must not come before start (both {'optimizer steps' if isinstance(self.end, int) else 'fractions'}"
                f"); got start={self.start!r}, end={self.end!r}; allowed: end >= start"
            )
        check_number("frequency", self.frequency, low=1, integer=True)
        if self.initial_sparsity is not None:
            check_number("initial_sparsity", self.initial_sparsity, low=0.0, high=1.0, high_inclusive=False)
            if self.initial_sparsity > self.final_sparsity:
                logger.warning(
                    "hf_compress: initial_sparsity=%s exceeds the target %s; the schedule cannot ramp down, so the "
                    "target is raised to initial_sparsity (set initial_sparsity <= target_sparsity)",
                    self.initial_sparsity,
                    self.final_sparsity,
                )
        validate_name("pruning_criterion", self.criterion, "criterion")
        if self.criterion_kwargs is not None and not isinstance(self.criterion_kwargs, dict):
            raise ValueError(f"criterion_kwargs must be a dict of options or None; got {self.criterion_kwargs!r}")
        check_choice("scope", self.scope, SCOPES)
        self.targets = check_regex_list("targets", self.targets)
        self.exclude = check_regex_list("exclude", self.exclude)
        if self.per_layer is not None:
            if not isinstance(self.per_layer, dict):
                raise ValueError(f"per_layer must be a dict {{regex: sparsity}} or None; got {self.per_layer!r}")
            if pattern_sparsity is not None and self.per_layer:
                raise ValueError(
                    f"per_layer: not allowed with the N:M pattern {self.pattern!r} (its sparsity is fixed)"
                )
            for regex, sparsity in self.per_layer.items():
                check_regex_list("per_layer", [regex])
                check_number(f"per_layer[{regex!r}]", sparsity, low=0.0, high=1.0, high_inclusive=False)
        check_bool("mask_gradients", self.mask_gradients)
        check_number("seed", self.seed, integer=True)
        # the criterion checks its own options (criterion_kwargs), without being built
        get_registry().get("pruning_criterion", self.criterion).check_options(**(self.criterion_kwargs or {}))

    @property
    def final_sparsity(self) -> float:
        """The sparsity reached at ``end``: ``target_sparsity``, or ``1 - N/M`` for an N:M pattern."""
        pattern_sparsity = pattern_final_sparsity(self.pattern)
        return pattern_sparsity if pattern_sparsity is not None else float(self.target_sparsity)

    @property
    def normalized_pattern(self) -> str:
        """The pattern as the pruning functions expect it: ``"2:4"`` for ``" 2 : 4 "``, names lowercased."""
        n_m = parse_n_m(self.pattern)
        return f"{n_m[0]}:{n_m[1]}" if n_m else self.pattern.lower()
