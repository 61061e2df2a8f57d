"""Registry kind ``technique``: one recipe section, its config class and the callback it becomes.

Built-ins register theirs exactly as plugins do (``registry.register("technique", "pruning", Technique(...))``), and
recipes iterate the registry, so a plugin's section has the same standing as ``pruning:`` or ``quantization:``.
Config classes and callback factories may be given as ``"module:attribute"`` strings: nothing is imported until a
recipe uses the section.

```python
>>> from hf_compress.recipes.technique import Technique
>>> technique = Technique("hf_compress.pruning.config:PruningConfig", "hf_compress.pruning.registration:pruning_callback")
>>> technique.config_class().__name__
'PruningConfig'

```
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


def import_object(target: Any) -> Any:
    """``target`` itself, or the object a ``"module:attribute"`` string names."""
    if not isinstance(target, str):
        return target
    module_name, _, attribute = target.partition(":")
    value = importlib.import_module(module_name)
    for part in attribute.split("."):
        value = getattr(value, part)
    return value


@dataclass(frozen=True)
class Technique:
    """A recipe section.

    Args:
        config (`type` or `str`): the config dataclass (a :class:`~hf_compress.config_base.CompressionConfig`
            subclass, validating itself), or ``"module:Class"``.
        make_callback (`Callable` or `str`): ``make_callback(config, **recipe_values) -> TrainerCallback``, or
            ``"module:function"``.
        order (`int`, *optional*, defaults to 100): callbacks are created in ascending order (recipe ``callbacks:``
            entries come first; built-ins use 20-50, so a plugin's default runs after them).
        recipe_keys (`Mapping[str, type]`, *optional*): keys of the section that are not config fields (such as
            distillation's ``teacher``), with their type; they reach ``make_callback`` as keyword arguments, and
            ``callbacks_from_recipe(..., **overrides)`` may override them.
    """

    config: type | str
    make_callback: Callable[..., Any] | str
    order: int = 100
    recipe_keys: Mapping[str, type] = field(default_factory=dict)

    def describe_module(self) -> str:
        """Where the section's config lives (shown by ``hf-compress plugins list``)."""
        config = self.config
        return config if isinstance(config, str) else f"{config.__module__}:{config.__qualname__}"

    def config_class(self) -> type:
        return import_object(self.config)

    def callback(self, config: Any, recipe_values: Mapping[str, Any]) -> Any:
        return import_object(self.make_callback)(config, **recipe_values)
