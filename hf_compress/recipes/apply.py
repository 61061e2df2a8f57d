"""Turning a recipe into Trainer callbacks, and recording what was applied beside the saved model."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainerCallback

from hf_compress.distributed import is_main_process, unwrap_model
from hf_compress.recipes.schema import RECIPE_FILENAME, Recipe, load_recipe, techniques


class RecipeRecorderCallback(TrainerCallback):
    """Writes ``compression_recipe.yaml`` into every checkpoint and the output folder, and records the recipe in
    ``model.config.hf_compress_recipe`` so a saved model says how it was compressed."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is not None:
            unwrap_model(model).config.hf_compress_recipe = self.recipe.to_dict()

    def on_save(self, args, state, control, **kwargs):
        if is_main_process():
            self.recipe.save(os.path.join(args.output_dir, f"checkpoint-{state.global_step}"))

    def on_train_end(self, args, state, control, **kwargs):
        if is_main_process():
            self.recipe.save(args.output_dir)


def callbacks_from_recipe(recipe: str | os.PathLike | dict | Recipe, teacher: Any = None) -> list[TrainerCallback]:
    """The Trainer callbacks a recipe describes, in the order they must run.

    Args:
        recipe: a YAML/JSON path, a YAML string, a dict or a loaded :class:`Recipe`.
        teacher (`PreTrainedModel` or `str`, *optional*): the distillation teacher; overrides ``distillation.teacher``.

    Example:

    ```python
    >>> from hf_compress import callbacks_from_recipe
    >>> [type(c).__name__ for c in callbacks_from_recipe({"pruning": {"target_sparsity": 0.5}})]
    ['PruningCallback', 'RecipeRecorderCallback']
    ```
    """
    recipe = load_recipe(recipe)
    callbacks: list[TrainerCallback] = []
    # Plugin callbacks first: a one-shot pruner must have pruned before PruningCallback measures initial sparsity.
    if recipe.callbacks:
        from hf_compress.registry import get_registry

        for index, spec in enumerate(recipe.callbacks):
            factory = get_registry().get("callback", spec.name)
            try:
                callbacks.append(factory(**spec.fields))
            except (TypeError, ValueError) as error:
                raise ValueError(f"{recipe.source}: callbacks[{index}] ({spec.name}): {error}") from None
    registered = techniques()
    overrides = {"teacher": teacher}
    for section in sorted(recipe.configs, key=lambda name: (registered[name].order, name)):
        technique = registered[section]
        values = dict(recipe.recipe_values.get(section, {}))
        for key in technique.recipe_keys:
            if overrides.get(key) is not None:
                values[key] = overrides[key]
        try:
            callbacks.append(technique.callback(recipe.configs[section], values))
        except ValueError as error:
            raise ValueError(f"{recipe.source}: {error}") from None
    callbacks.append(RecipeRecorderCallback(recipe))
    return callbacks


def attach(trainer, recipe: str | os.PathLike | dict | Recipe, teacher: Any = None) -> list[TrainerCallback]:
    """Add a recipe's callbacks to an existing ``Trainer`` (before its reporters, so they log what the callbacks
    add) and return them.

    Example:

    ```python
    trainer = Trainer(model=model, args=args, train_dataset=train_dataset)
    hf_compress.attach(trainer, "recipe.yaml")
    trainer.train()
    trainer.save_model()  # compression_recipe.yaml is written beside the model
    ```
    """
    from hf_compress.trainer.logs import add_callbacks

    return add_callbacks(trainer, *callbacks_from_recipe(recipe, teacher=teacher))


@dataclass
class CompressionArguments:
    """Add to an ``HfArgumentParser`` to give a script a ``--compression_recipe`` argument.

    ```python
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments, CompressionArguments))
    model_args, data_args, training_args, compression_args = parser.parse_args_into_dataclasses()
    ...
    if compression_args.compression_recipe:
        hf_compress.attach(trainer, compression_args.compression_recipe)
    ```
    """

    compression_recipe: str | None = field(
        default=None,
        metadata={"help": f"Path to an hf_compress recipe (YAML/JSON); saved beside the model as {RECIPE_FILENAME}."},
    )
