"""Registers the structured built-ins: importance criteria (kind ``structure_criterion``) and the callback."""

from __future__ import annotations


def register(registry) -> None:
    from hf_compress.structured.callback import structured_pruning_callback
    from hf_compress.structured.criteria import BUILTIN_STRUCTURE_CRITERIA

    for name, criterion in BUILTIN_STRUCTURE_CRITERIA.items():
        registry.register("structure_criterion", name, criterion)
    registry.register("callback", "structured_pruning", structured_pruning_callback)
