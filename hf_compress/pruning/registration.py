"""Registers the pruning built-ins: schedules, criteria, patterns and the ``one_shot_pruning`` callback.

Patterns: ``unstructured``, ``row``, ``head`` and the family ``n:m``; a config's ``pattern="2:4"`` (any ``N:M`` of
integers) resolves to ``n:m`` with its N and M (see :mod:`hf_compress.pruning.patterns`).
"""

from __future__ import annotations


def pruning_callback(config):
    from hf_compress.pruning.callback import PruningCallback

    return PruningCallback(config)


def l1_callback(config):
    from hf_compress.pruning.l1 import L1RegularizationCallback

    return L1RegularizationCallback(config)


SCHEDULES = ("constant", "one_shot", "linear", "cubic", "exponential", "cosine")
CRITERIA = {
    "magnitude": "MagnitudeCriterion",
    "movement": "MovementCriterion",
    "random": "RandomCriterion",
}


def register(registry) -> None:
    from hf_compress.recipes.technique import Technique
    from hf_compress.registry import lazy

    for name in SCHEDULES:
        registry.register("schedule", name, lazy(f"hf_compress.pruning.schedules:{name}"))
    for name, class_name in CRITERIA.items():
        registry.register("pruning_criterion", name, lazy(f"hf_compress.pruning.criteria:{class_name}"))
    from hf_compress.pruning.patterns import PATTERN_ENTRIES  # light: torch only, and every pruning config uses it

    for name, pattern in PATTERN_ENTRIES.items():
        registry.register("pruning_pattern", name, pattern)
    registry.register(
        "pruning_criterion", "sparsegpt", lazy("hf_compress.pruning.sparsegpt_criterion:SparseGPTCriterion")
    )
    registry.register("callback", "one_shot_pruning", lazy("hf_compress.pruning.one_shot:OneShotPruningCallback"))
    registry.register(
        "technique", "pruning", Technique("hf_compress.pruning.config:PruningConfig", pruning_callback, order=30)
    )
    registry.register(
        "technique",
        "l1_regularization",
        Technique("hf_compress.pruning.l1:L1RegularizationConfig", l1_callback, order=40),
    )
