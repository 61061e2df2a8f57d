"""Reading and validating recipes. Each technique's section is validated by that technique's own config dataclass,
so the recipe schema and the Python API can never drift apart; errors name the file and the key path."""

from __future__ import annotations

import copy
import difflib
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

RECIPE_FILENAME = "compression_recipe.yaml"

PLUGIN_CALLBACKS_KEY = "callbacks"


def techniques() -> dict[str, Any]:
    """Recipe section -> :class:`~hf_compress.recipes.technique.Technique`, from the registry (built-ins and plugins
    alike)."""
    from hf_compress.registry import get_registry

    return {name: component.obj for name, component in get_registry().view("technique").items()}


def top_level_keys() -> tuple[str, ...]:
    return (*sorted(techniques()), PLUGIN_CALLBACKS_KEY)


def config_class(section: str) -> type:
    return techniques()[section].config_class()


@dataclass
class PluginCallbackSpec:
    name: str
    fields: dict[str, Any]


@dataclass
class Recipe:
    """A validated recipe: one config per technique present, plus plugin callbacks."""

    configs: dict[str, Any] = field(default_factory=dict)
    recipe_values: dict[str, dict[str, Any]] = field(default_factory=dict)  # section -> its non-config keys
    callbacks: list[PluginCallbackSpec] = field(default_factory=list)
    source: str = "<dict>"

    @property
    def teacher(self) -> str | None:
        return self.recipe_values.get("distillation", {}).get("teacher")

    def techniques(self) -> list[str]:
        names = list(self.configs)
        names += [f"callbacks.{spec.name}" for spec in self.callbacks]
        return names

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for section, config in self.configs.items():
            out[section] = {**self.recipe_values.get(section, {}), **config.to_dict()}
        if self.callbacks:
            out["callbacks"] = [{"name": spec.name, **spec.fields} for spec in self.callbacks]
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, folder: str) -> str:
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, RECIPE_FILENAME)
        with open(path, "w") as handle:
            handle.write(self.to_yaml())
        return path


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (plain YAML keeps the last one silently)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {shorten(repr(key), 80)} (first on line {seen[key]}, again on line {line})"
            )
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def parse_recipe_text(text: str, source: str) -> Any:
    """YAML/JSON text to plain data, safe tags only, duplicate keys refused; errors name ``source``."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        raise ValueError(f"{source}: not valid YAML/JSON: {shorten(str(error))}") from None


def read_recipe_file(path: str) -> Any:
    """Read a recipe file as UTF-8; a file in another encoding is an error naming it."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: not UTF-8 text (byte {error.object[error.start : error.start + 1]!r} at offset {error.start}); "
            "save the recipe as UTF-8"
        ) from None
    return parse_recipe_text(text, path)


def shorten(text: str, limit: int = 600) -> str:
    """``text`` cut to about ``limit`` characters, saying how long it was (a huge value is not echoed whole)."""
    if len(text) <= limit:
        return text
    return f"{text[: limit // 2]} ...[{len(text) - limit} characters cut]... {text[-limit // 2 :]}"


def load_recipe(recipe: str | os.PathLike | dict | Recipe) -> Recipe:
    """Read (with ``yaml.safe_load`` only) and validate a recipe from a YAML/JSON path, a YAML string or a dict.

    Raises:
        ValueError: naming the file, the key path (e.g. ``pruning.target_sparsity``) and the allowed values.
    """
    if isinstance(recipe, Recipe):
        return recipe
    source = "<dict>"
    if isinstance(recipe, (str, os.PathLike)):
        text = str(recipe)
        if os.path.isdir(text):
            raise ValueError(f"{text}: is a folder; expected a recipe file (YAML or JSON)")
        if os.path.exists(text):
            source = text
            data = read_recipe_file(text)
        elif text.endswith((".yaml", ".yml", ".json")):
            raise ValueError(f"recipe file {text!r} does not exist")
        else:
            source = "<string>"
            data = parse_recipe_text(text, source)
    elif isinstance(recipe, dict):
        data = copy.deepcopy(recipe)
    else:
        raise ValueError(f"recipe must be a path, a YAML string or a dict; got {type(recipe).__name__}")
    try:
        return _validate(data, source)
    except ValueError as error:
        raise ValueError(shorten(str(error))) from None


def _validate(data: Any, source: str) -> Recipe:
    if data is None:
        data = {}
    allowed = top_level_keys()
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a recipe is a mapping with keys {', '.join(allowed)}; got {type(data).__name__}")
    recipe = Recipe(source=source)
    registered = techniques()
    for key, value in data.items():
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{source}: {key}: unknown key; allowed top-level keys: {', '.join(allowed)}.{hint}")
        if key == PLUGIN_CALLBACKS_KEY:
            recipe.callbacks = _plugin_callbacks(value, source)
            continue
        technique = registered[key]
        cls = technique.config_class()
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ValueError(f"{source}: {key}: expected a mapping of {cls.__name__} fields, got {value!r}")
        values = dict(value)
        extras = {}
        for extra, expected_type in technique.recipe_keys.items():
            if extra in values:
                extras[extra] = values.pop(extra)
                if not isinstance(extras[extra], expected_type):
                    raise ValueError(
                        f"{source}: {key}.{extra}: expected a {expected_type.__name__}, got {extras[extra]!r}"
                    )
        if extras:
            recipe.recipe_values[key] = extras
        try:
            recipe.configs[key] = cls.from_dict(values, where=key)
        except (TypeError, ValueError) as error:
            message = str(error)
            if not message.startswith(key):
                first_word = message.split(" ")[0].rstrip(":")
                message = f"{key}.{message}" if first_word in cls.field_names() else f"{key}: {message}"
            raise ValueError(f"{source}: {message}") from None
    return recipe


def _plugin_callbacks(value: Any, source: str) -> list[PluginCallbackSpec]:
    from hf_compress.registry import get_registry

    if not isinstance(value, list):
        raise ValueError(f"{source}: callbacks: expected a list of {{name: ..., fields...}} mappings, got {value!r}")
    specs = []
    for index, item in enumerate(value):
        where = f"callbacks[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ValueError(f"{source}: {where}: expected a mapping with a string 'name' key, got {item!r}")
        fields = {k: v for k, v in item.items() if k != "name"}
        try:
            get_registry().component("callback", item["name"])
        except ValueError as error:
            raise type(error)(f"{source}: {where}.name: {error}") from None
        specs.append(PluginCallbackSpec(item["name"].lower(), fields))
    return specs
