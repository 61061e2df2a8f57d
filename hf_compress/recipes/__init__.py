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

from hf_compress.recipes.apply import CompressionArguments, attach, callbacks_from_recipe
from hf_compress.recipes.schema import RECIPE_FILENAME, TECHNIQUES, Recipe, load_recipe

__all__ = [
    "RECIPE_FILENAME",
    "TECHNIQUES",
    "CompressionArguments",
    "Recipe",
    "attach",
    "callbacks_from_recipe",
    "load_recipe",
]
