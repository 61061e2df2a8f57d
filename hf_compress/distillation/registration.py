"""Registers the built-in distillation losses (kind ``distillation_loss``) and the ``distillation`` technique."""

from __future__ import annotations

LOSSES = ("kl", "reverse_kl", "jsd", "mse", "cosine")


def distillation_callback(config, teacher=None):
    if teacher is None:
        raise ValueError(
            "distillation.teacher: a teacher is required: give a model path in the recipe "
            "or pass teacher= to callbacks_from_recipe / attach"
        )
    from hf_compress.distillation.callback import DistillationCallback

    return DistillationCallback(teacher, config)


def register(registry) -> None:
    from hf_compress.recipes.technique import Technique
    from hf_compress.registry import lazy

    for name in LOSSES:
        registry.register("distillation_loss", name, lazy(f"hf_compress.distillation.losses:{name}"))
    registry.register(
        "technique",
        "distillation",
        Technique(
            "hf_compress.distillation.config:DistillationConfig",
            distillation_callback,
            order=20,
            recipe_keys={"teacher": str},
        ),
    )
