"""Shared behaviour of the technique configs: validation helpers and plain-dict round trips.

Every technique config is a dataclass that subclasses :class:`CompressionConfig`, validates each field in
``__post_init__`` with the helpers below (so errors name the field and the allowed values), and serialises to a
plain dict (for recipes and checkpoints) with :meth:`CompressionConfig.to_dict` / :meth:`CompressionConfig.from_dict`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T", bound="CompressionConfig")


class CompressionConfig:
    """Mixin for config dataclasses: ``to_dict`` / ``from_dict`` with a clear error for unknown fields."""

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, tuple):
                value = list(value)
            out[field.name] = value
        return out

    @classmethod
    def field_names(cls) -> list[str]:
        return [field.name for field in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls: type[T], values: dict[str, Any], *, where: str = "") -> T:
        """Build the config from a plain dict; an unknown key raises a ValueError naming it and the known fields."""
        if not isinstance(values, dict):
            raise ValueError(f"{where or cls.__name__}: expected a mapping of fields, got {type(values).__name__}")
        known = cls.field_names()
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                path = f"{where}.{key}" if where else key
                raise ValueError(
                    f"{path}: unknown field for {cls.__name__}; allowed fields: {', '.join(known)}.{hint}"
                )
        return cls(**values)


def check_choice(field: str, value: Any, allowed: Iterable[str]) -> str:
    allowed = list(allowed)
    if not isinstance(value, str) or value.lower() not in allowed:
        close = difflib.get_close_matches(str(value).lower(), allowed, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"{field} must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}.{hint}")
    return value.lower()


def check_number(
    field: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    integer: bool = False,
) -> Any:
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise ValueError(
            f"{field} must be {kind}{_range_text(low, high, low_inclusive, high_inclusive)}; got {value!r}"
        )
    if not math.isfinite(value):
        raise ValueError(
            f"{field} must be a finite {'integer' if integer else 'number'}"
            f"{_range_text(low, high, low_inclusive, high_inclusive)}; got {value!r}"
        )
    too_low = low is not None and (value < low if low_inclusive else value <= low)
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    if too_low or too_high:
        raise ValueError(
            f"{field} must be {kind}{_range_text(low, high, low_inclusive, high_inclusive)}; got {value!r}"
        )
    return value


def _range_text(low, high, low_inclusive, high_inclusive) -> str:
    if low is None and high is None:
        return ""
    left = "[" if low_inclusive else "("
    right = "]" if high_inclusive else ")"
    return f" in {left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"


def check_step_spec(field: str, value: Any) -> int | float:
    """A training point: an optimizer step (int >= 0) or a fraction of the run's total steps (float in [0, 1])."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(
            f"{field} must be an optimizer step (int >= 0) or a fraction of the run (float in [0, 1]); got {value!r}"
        )
    if isinstance(value, int) and value < 0:
        raise ValueError(
            f"{field} must be an optimizer step (int >= 0) or a fraction of the run (float in [0, 1]); got {value!r}"
        )
    if isinstance(value, float) and not 0.0 <= value <= 1.0:
        raise ValueError(
            f"{field} must be an optimizer step (int >= 0) or a fraction of the run (float in [0, 1]); got {value!r}"
        )
    return value


def resolve_step(value: int | float, total_steps: int) -> int:
    """Turn a step spec into an optimizer step: ints are steps, floats are fractions of ``total_steps``."""
    if isinstance(value, float):
        return int(round(value * total_steps))
    return int(value)
