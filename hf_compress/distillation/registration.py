"""Registers the built-in distillation losses under registry kind ``distillation_loss``."""

from __future__ import annotations


def register(registry) -> None:
    from hf_compress.distillation.losses import BUILTIN_LOSSES

    for name, loss in BUILTIN_LOSSES.items():
        registry.register("distillation_loss", name, loss)
