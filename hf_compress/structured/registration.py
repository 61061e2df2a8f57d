"""Registers the structured built-ins: importance criteria (kind ``structure_criterion``), the callback and the
``structured_pruning`` recipe section. Everything is registered lazily: nothing is imported until it is used."""

from __future__ import annotations

STRUCTURE_CRITERIA = {
    "activation": "ActivationStructureCriterion",
    "taylor": "TaylorStructureCriterion",
    "magnitude": "MagnitudeStructureCriterion",
    "block_influence": "BlockInfluenceCriterion",
    "skip_loss": "SkipLossCriterion",
}


def structured_technique_callback(config):
    """A recipe's ``structured_pruning:`` section: masks whole structures before the first step, shrinks at the end."""
    from hf_compress.structured.callback import StructuredPruningCallback

    return StructuredPruningCallback(config)


def register(registry) -> None:
    from hf_compress.recipes.technique import Technique
    from hf_compress.registry import lazy

    for name, class_name in STRUCTURE_CRITERIA.items():
        registry.register("structure_criterion", name, lazy(f"hf_compress.structured.criteria:{class_name}"))
    registry.register(
        "callback", "structured_pruning", lazy("hf_compress.structured.callback:structured_pruning_callback")
    )
    registry.register(
        "technique",
        "structured_pruning",
        Technique("hf_compress.structured.config:StructuredPruningConfig", structured_technique_callback, order=10),
    )
