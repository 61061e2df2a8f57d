"""Compression recipes: one YAML/JSON file (or dict) that describes a whole compression run.

```yaml
pruning: {target_sparsity: 0.5, schedule: cubic, start: 0.1, end: 0.7, criterion: magnitude}
distillation: {teacher: path/to/teacher, loss: kl, temperature: 2.0, alpha: 0.5}
quantization: {weight_bits: 8, granularity: per_channel, start: 0.5}
callbacks: [{name: some_plugin_callback, some_field: 1}]
```

```python
import hf_compress

hf_compress.attach(trainer, "recipe.yaml")          # adds the callbacks to an existing Trainer
callbacks = hf_compress.callbacks_from_recipe("recipe.yaml", teacher=teacher_model)
```
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RECIPE_FILENAME": "hf_compress.recipes.schema",
    "CompressionArguments": "hf_compress.recipes.apply",
    "Recipe": "hf_compress.recipes.schema",
    "Technique": "hf_compress.recipes.technique",
    "attach": "hf_compress.recipes.apply",
    "callbacks_from_recipe": "hf_compress.recipes.apply",
    "load_recipe": "hf_compress.recipes.schema",
    "techniques": "hf_compress.recipes.schema",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:  # imported on first use: the registry imports Technique at discovery
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'hf_compress.recipes' has no attribute {name!r}")
    return getattr(importlib.import_module(module_name), name)
