"""Turning a recipe into Trainer callbacks, and recording what was applied beside the saved model."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainerCallback

from hf_compress.distributed import is_main_process, unwrap_model
from hf_compress.recipes.schema import RECIPE_FILENAME, Recipe, load_recipe


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
    configs = recipe.configs
    # Plugin callbacks first: a one-shot pruner must have pruned before PruningCallback measures initial sparsity.
    if recipe.callbacks:
        from hf_compress.registry import get_registry

        for index, spec in enumerate(recipe.callbacks):
            factory = get_registry().get("callback", spec.name)
            try:
                callbacks.append(factory(**spec.fields))
            except (TypeError, ValueError) as error:
                raise ValueError(f"{recipe.source}: callbacks[{index}] ({spec.name}): {error}") from None
    if "structured_pruning" in configs:  # masks whole structures before the first step; shrinks at train end
        from hf_compress.structured.callback import StructuredPruningCallback

        callbacks.append(StructuredPruningCallback(configs["structured_pruning"]))
    if "distillation" in configs:
        from hf_compress.distillation.callback import DistillationCallback

        chosen_teacher = teacher if teacher is not None else recipe.teacher
        if chosen_teacher is None:
            raise ValueError(
                f"{recipe.source}: distillation.teacher: a teacher is required: give a model path in the recipe "
                "or pass teacher= to callbacks_from_recipe / attach"
            )
        callbacks.append(DistillationCallback(chosen_teacher, configs["distillation"]))
    if "pruning" in configs:
        from hf_compress.pruning.callback import PruningCallback

        callbacks.append(PruningCallback(configs["pruning"]))
    if "l1_regularization" in configs:
        from hf_compress.pruning.l1 import L1RegularizationCallback

        callbacks.append(L1RegularizationCallback(configs["l1_regularization"]))
    if "quantization" in configs:
        from hf_compress.quantization.callback import QATCallback

        callbacks.append(QATCallback(configs["quantization"]))
    callbacks.append(RecipeRecorderCallback(recipe))
    return callbacks


def attach(trainer, recipe: str | os.PathLike | dict | Recipe, teacher: Any = None) -> list[TrainerCallback]:
    """Add a recipe's callbacks to an existing ``Trainer`` and return them.

    Example:

    ```python
    trainer = Trainer(model=model, args=args, train_dataset=train_dataset)
    hf_compress.attach(trainer, "recipe.yaml")
    trainer.train()
    trainer.save_model()  # compression_recipe.yaml is written beside the model
    ```
    """
    callbacks = callbacks_from_recipe(recipe, teacher=teacher)
    for callback in callbacks:
        trainer.add_callback(callback)
    return callbacks


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
