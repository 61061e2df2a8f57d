"""The plugin registry: named components of a few kinds, discovered once through entry points.

Every component, built-in or third-party, arrives the same way: a distribution declares an entry point in the group
``hf_compress.plugins`` naming a callable ``register(registry)``, which calls ``registry.register(kind, name, obj)``.
hf_compress's own built-ins are the entry point ``builtins = hf_compress.builtins:register``.

Example:

```python
>>> from hf_compress.registry import get_registry
>>> schedule = get_registry().get("schedule", "cubic")
>>> round(schedule(0.5), 3)
0.875
```

A component may be registered as ``lazy("module:attribute")``: the module is imported the first time the component
is asked for, so discovery stays cheap and building a config imports only what it uses.

Switches (read when discovery runs):

- ``HF_COMPRESS_DISABLE_PLUGIN_AUTOLOAD=1``: load hf_compress's built-ins only.
- ``HF_COMPRESS_PLUGINS=a,b``: load only the entry points (or distributions) named, plus the built-ins.
"""

from __future__ import annotations

import difflib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from types import MappingProxyType
from typing import Any

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "hf_compress.plugins"
BUILTIN_DISTRIBUTION = "hf-compress"
BUILTIN_ENTRY_POINT = "builtins"

KINDS = (
    "schedule",
    "pruning_criterion",
    "pruning_pattern",
    "distillation_loss",
    "quantizer",
    "hallucination_checker",
    "callback",
    "export_format",
    "technique",
    "structure_criterion",
)

# Components that live in the separately installed distributions under plugins/.
# Asking for one of these names without the plugin gives an install hint instead of a bare "unknown name".
KNOWN_THIRD_PARTY = {
    ("pruning_criterion", "wanda"): ("hf-compress-wanda", "pip install ./plugins/hf-compress-wanda"),
    ("callback", "wanda_one_shot"): ("hf-compress-wanda", "pip install ./plugins/hf-compress-wanda"),
    ("distillation_loss", "skew_kl"): ("hf-compress-skewkl", "pip install ./plugins/hf-compress-skewkl"),
    ("distillation_loss", "skew_reverse_kl"): ("hf-compress-skewkl", "pip install ./plugins/hf-compress-skewkl"),
}


@dataclass(frozen=True)
class lazy:  # noqa: N801 (reads as a function at the registration site)
    """A component named by import path, imported on first use: ``registry.register(kind, name, lazy("pkg.mod:Obj"))``."""

    target: str

    def load(self) -> Any:
        import importlib

        module_name, _, attribute = self.target.partition(":")
        value = importlib.import_module(module_name)
        for part in attribute.split("."):
            value = getattr(value, part)
        return value


class PluginNotInstalledError(ValueError):
    """Raised for a component name that belongs to a known plugin distribution that is not installed."""


@dataclass(frozen=True)
class Component:
    kind: str
    name: str
    target: Any  # the object, or a `lazy` import path
    distribution: str
    version: str
    module: str

    @property
    def obj(self) -> Any:
        """The component itself (imported now if it was registered ``lazy``)."""
        if not isinstance(self.target, lazy):
            return self.target
        if "_loaded" not in self.__dict__:
            object.__setattr__(self, "_loaded", self.target.load())
        return self.__dict__["_loaded"]

    def as_dict(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "module": self.module,
        }


@dataclass(frozen=True)
class BrokenPlugin:
    entry_point: str
    distribution: str
    version: str
    error: str

    def as_dict(self) -> dict[str, str]:
        return {
            "entry_point": self.entry_point,
            "distribution": self.distribution,
            "version": self.version,
            "error": self.error,
        }


class Registry:
    """Named components by kind. Read access goes through read-only views; writes through :meth:`register`."""

    def __init__(self) -> None:
        self._components: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
        self._broken: list[BrokenPlugin] = []
        # Which distribution is registering right now (set by the loader around each register() call).
        self._current_distribution = (BUILTIN_DISTRIBUTION, _distribution_version(BUILTIN_DISTRIBUTION))

    # ---------------------------------------------------------------- writing
    def register(self, kind: str, name: str, obj: Any, *, replace: bool = False) -> Any:
        """Add ``obj`` under ``kind``/``name``. Returns ``obj`` so it can be used as a decorator helper.

        Args:
            kind (`str`): one of `KINDS`.
            name (`str`): lowercase name users write in configs, e.g. ``"cubic"``.
            obj: the component (a function or a class, depending on the kind).
            replace (`bool`, *optional*, defaults to `False`): replace an existing component of that name. Without
                it, a second registration of the same name is an error naming both distributions.
        """
        if kind not in self._components:
            raise ValueError(f"registry kind {kind!r} is not known; allowed kinds: {', '.join(KINDS)}")
        if not isinstance(name, str) or not name or name != name.lower():
            raise ValueError(f"component name {name!r} for kind {kind!r} must be a non-empty lowercase string")
        distribution, version = self._current_distribution
        existing = self._components[kind].get(name)
        if existing is not None and not replace:
            raise ValueError(
                f"{kind} {name!r} is registered twice: by {existing.distribution} {existing.version} "
                f"({existing.module}) and by {distribution} {version} ({_module_of(obj)}). "
                "Pass replace=True to registry.register(...) to replace it on purpose."
            )
        if existing is not None:
            logger.warning(
                "hf_compress: %s %r from %s %s (%s) replaces the one from %s %s (%s)",
                kind,
                name,
                distribution,
                version,
                _module_of(obj),
                existing.distribution,
                existing.version,
                existing.module,
            )
        self._components[kind][name] = Component(kind, name, obj, distribution, version, _module_of(obj))
        return obj

    # ---------------------------------------------------------------- reading
    def get(self, kind: str, name: str) -> Any:
        """The component ``name`` of ``kind``; a ValueError lists the known names and the closest match."""
        return self.component(kind, name).obj

    def component(self, kind: str, name: str) -> Component:
        if kind not in self._components:
            raise ValueError(f"registry kind {kind!r} is not known; allowed kinds: {', '.join(KINDS)}")
        if not isinstance(name, str):
            raise ValueError(f"{kind} name must be a string, got {type(name).__name__}")
        found = self._components[kind].get(name.lower())
        if found is not None:
            return found
        hint = KNOWN_THIRD_PARTY.get((kind, name.lower()))
        if hint is not None:
            distribution, command = hint
            raise PluginNotInstalledError(
                f"{kind} {name!r} is provided by the plugin {distribution!r}, which is not installed "
                f"(or is disabled by HF_COMPRESS_DISABLE_PLUGIN_AUTOLOAD / HF_COMPRESS_PLUGINS). "
                f"Install it with: {command}"
            )
        known = sorted(self._components[kind])
        close = difflib.get_close_matches(name.lower(), known, n=1)
        suggestion = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown {kind} {name!r}; known {kind} names: {', '.join(known) or '(none)'}.{suggestion}")

    def names(self, kind: str) -> list[str]:
        return sorted(self._components[kind])

    def view(self, kind: str) -> MappingProxyType:
        """A read-only mapping ``name -> Component`` for one kind."""
        return MappingProxyType(self._components[kind])

    def __iter__(self) -> Iterator[Component]:
        for kind in KINDS:
            for name in sorted(self._components[kind]):
                yield self._components[kind][name]

    @property
    def broken(self) -> list[BrokenPlugin]:
        return list(self._broken)

    def as_dict(self) -> dict[str, list[dict[str, str]]]:
        """The shape printed by ``hf-compress plugins list --json``."""
        return {
            "components": [component.as_dict() for component in self],
            "broken": [plugin.as_dict() for plugin in self._broken],
        }


def _module_of(obj: Any) -> str:
    if isinstance(obj, lazy):
        return obj.target
    describe = getattr(obj, "describe_module", None)
    if callable(describe):
        return describe()
    module = getattr(obj, "__module__", None) or type(obj).__module__
    qualname = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}:{qualname}"


def _distribution_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def _entry_point_distribution(entry_point: metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return "unknown", "unknown"
    return dist.metadata["Name"], dist.version


def _is_builtin(entry_point: metadata.EntryPoint) -> bool:
    return entry_point.value.startswith("hf_compress.builtins")


def _selected(entry_point: metadata.EntryPoint, distribution: str) -> bool:
    if _is_builtin(entry_point):
        return True
    if os.environ.get("HF_COMPRESS_DISABLE_PLUGIN_AUTOLOAD", "").strip().lower() in {"1", "true", "yes"}:
        return False
    allowed = os.environ.get("HF_COMPRESS_PLUGINS", "").strip()
    if not allowed:
        return True
    wanted = {item.strip().lower() for item in allowed.split(",") if item.strip()}
    return entry_point.name.lower() in wanted or distribution.lower() in wanted


def _load_into(registry: Registry, entry_point: metadata.EntryPoint, distribution: str, version: str) -> None:
    registry._current_distribution = (distribution, version)
    before = {kind: dict(components) for kind, components in registry._components.items()}
    try:
        register: Callable[[Registry], None] = entry_point.load()
        register(registry)
    except Exception as error:  # a broken plugin never takes the rest down
        if _is_builtin(entry_point):
            raise
        for kind, components in registry._components.items():  # all or nothing: what it registered goes too
            components.clear()
            components.update(before[kind])
        registry._broken.append(
            BrokenPlugin(entry_point.name, distribution, version, f"{type(error).__name__}: {error}")
        )
        logger.warning(
            "hf_compress: skipping plugin %r from %s %s: %s: %s",
            entry_point.name,
            distribution,
            version,
            type(error).__name__,
            error,
        )
    finally:
        registry._current_distribution = (BUILTIN_DISTRIBUTION, _distribution_version(BUILTIN_DISTRIBUTION))


def discover() -> Registry:
    """Build a fresh registry from the installed entry points (built-ins first, then plugins by name)."""
    registry = Registry()
    entry_points = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    has_builtin = any(_is_builtin(ep) for ep in entry_points)
    if not has_builtin:
        # Running from a source tree that was never pip-installed: still register the built-ins the same way.
        entry_points.insert(
            0,
            metadata.EntryPoint(
                name=BUILTIN_ENTRY_POINT, value="hf_compress.builtins:register", group=ENTRY_POINT_GROUP
            ),
        )
    entry_points.sort(key=lambda ep: (not _is_builtin(ep), ep.name))
    seen_builtin = False
    for entry_point in entry_points:
        if _is_builtin(entry_point):
            if seen_builtin:  # an editable install can list the same distribution twice
                continue
            seen_builtin = True
        distribution, version = _entry_point_distribution(entry_point)
        if _is_builtin(entry_point) and distribution == "unknown":
            distribution, version = BUILTIN_DISTRIBUTION, _distribution_version(BUILTIN_DISTRIBUTION)
        if not _selected(entry_point, distribution):
            continue
        _load_into(registry, entry_point, distribution, version)
    return registry


_REGISTRY: Registry | None = None
_LOCK = threading.Lock()


def get_registry() -> Registry:
    """The process-wide registry, discovered lazily on first use and only once."""
    global _REGISTRY
    if _REGISTRY is None:
        with _LOCK:
            if _REGISTRY is None:
                _REGISTRY = discover()
    return _REGISTRY


def reset_registry() -> None:
    """Forget the discovered registry, so the next :func:`get_registry` discovers again (tests, env switches)."""
    global _REGISTRY
    with _LOCK:
        _REGISTRY = None


def resolve(kind: str, name: str) -> Any:
    """Shortcut for ``get_registry().get(kind, name)``."""
    return get_registry().get(kind, name)


def validate_name(kind: str, name: str, field: str) -> str:
    """Check a config field naming a component; the error names the field, the known names and the closest one."""
    try:
        get_registry().component(kind, name)
    except PluginNotInstalledError as error:
        raise PluginNotInstalledError(f"{field}: {error}") from None
    except ValueError as error:
        raise ValueError(f"{field}: {error}") from None
    return name.lower()
