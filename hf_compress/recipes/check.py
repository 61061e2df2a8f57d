"""What ``hf-compress recipe check`` verifies beyond the schema: everything ``attach`` checks without the model."""

from __future__ import annotations

import os

from hf_compress.recipes.schema import Recipe, load_recipe


def check_recipe(recipe: str | os.PathLike | dict | Recipe) -> Recipe:
    """Validate a recipe as :func:`~hf_compress.attach` would before it sees the model.

    On top of the schema (:func:`load_recipe`): plugin callbacks are built from their fields (so an unknown field or
    a value out of range fails here, not at ``attach``), and ``distillation.teacher`` must be a model folder that
    exists (hf_compress never downloads one).

    Raises:
        ValueError: naming the file and the key path.
    """
    recipe = load_recipe(recipe)
    if recipe.callbacks:
        from hf_compress.registry import get_registry

        for index, spec in enumerate(recipe.callbacks):
            factory = get_registry().get("callback", spec.name)
            try:
                factory(**spec.fields)
            except (TypeError, ValueError) as error:
                raise ValueError(f"{recipe.source}: callbacks[{index}] ({spec.name}): {error}") from None
    if recipe.teacher is not None:
        from hf_compress.local_models import check_local_model

        try:
            check_local_model(recipe.teacher, "distillation.teacher")
        except ValueError as error:
            raise ValueError(f"{recipe.source}: {error}") from None
    return recipe
