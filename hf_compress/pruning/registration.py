"""Registers the pruning built-ins: schedules, criteria, patterns and the ``one_shot_pruning`` callback.

Patterns: ``unstructured``, ``row``, ``head`` and the family ``n:m``; a config's ``pattern="2:4"`` (any ``N:M`` of
integers) resolves to ``n:m`` with its N and M (see :mod:`hf_compress.pruning.patterns`).
"""

from __future__ import annotations


def register(registry) -> None:
    from hf_compress.pruning.criteria import BUILTIN_CRITERIA
    from hf_compress.pruning.one_shot import OneShotPruningCallback
    from hf_compress.pruning.patterns import PATTERN_ENTRIES
    from hf_compress.pruning.schedules import BUILTIN_SCHEDULES
    from hf_compress.pruning.sparsegpt_criterion import SparseGPTCriterion

    for name, schedule in BUILTIN_SCHEDULES.items():
        registry.register("schedule", name, schedule)
    for name, criterion in BUILTIN_CRITERIA.items():
        registry.register("pruning_criterion", name, criterion)
    for name, pattern in PATTERN_ENTRIES.items():
        registry.register("pruning_pattern", name, pattern)
    registry.register("pruning_criterion", "sparsegpt", SparseGPTCriterion)
    registry.register("callback", "one_shot_pruning", OneShotPruningCallback)
