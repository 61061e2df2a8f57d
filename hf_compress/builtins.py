"""hf_compress's own components, registered through the same entry point path as any plugin.

``pyproject.toml`` declares ``builtins = "hf_compress.builtins:register"`` in the ``hf_compress.plugins`` group.
Each technique folder owns a ``registration.py`` with a ``register(registry)`` of its own.
"""

from __future__ import annotations

import importlib

TECHNIQUE_REGISTRATIONS = (
    "hf_compress.pruning.registration",
    "hf_compress.distillation.registration",
    "hf_compress.quantization.registration",
    "hf_compress.metrics.registration",
    "hf_compress.structured.registration",
)


def register(registry) -> None:
    for module_name in TECHNIQUE_REGISTRATIONS:
        importlib.import_module(module_name).register(registry)
