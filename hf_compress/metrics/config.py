"""Options of the hallucination metric, validated before anything runs (shared by the metric and the callback)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from hf_compress.config_base import CompressionConfig, check_choice, check_number
from hf_compress.metrics.checkers.base import existing_model_path
from hf_compress.registry import get_registry, validate_name

AGGREGATIONS = ("max", "mean")
CHECKER_OPTIONS = ("model_path", "batch_size", "device")


@dataclass
class HallucinationConfig(CompressionConfig):
    """How the hallucination metric judges claims.

    Args:
        checker (`str`, *optional*, defaults to `"lexical"`): a name of the registry kind ``hallucination_checker``:
            ``"lexical"`` (no model), ``"embedding"`` (sentence-transformers), ``"nli"`` (NLI classifier), or a plugin's.
        threshold (`float`, *optional*, defaults to 0.5): a claim whose score reaches it is hallucinated, and an
            example whose score reaches it is flagged.
        aggregation (`str`, *optional*, defaults to `"max"`): example score from its claim scores, ``"max"`` (any
            hallucinated claim flags the example) or ``"mean"``.
        model_path (`str`, *optional*): local model folder for checkers that run a model.
        batch_size (`int`, *optional*): texts or pairs per forward pass for checkers that run a model.
        device (`str`, *optional*): device for checkers that run a model.

    Example:

    ```python
    >>> from hf_compress.metrics.config import HallucinationConfig
    >>> HallucinationConfig(threshold=0.7).checker
    'lexical'
    >>> HallucinationConfig(threshold=1.5)
    Traceback (most recent call last):
    ...
    ValueError: threshold must be a number in [0.0, 1.0]; got 1.5
    ```
    """

    checker: str = "lexical"
    threshold: float = 0.5
    aggregation: str = "max"
    model_path: str | None = None
    batch_size: int | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        self.checker = validate_name("hallucination_checker", self.checker, "checker")
        check_number("threshold", self.threshold, low=0.0, high=1.0)
        self.aggregation = check_choice("aggregation", self.aggregation, AGGREGATIONS)
        if self.model_path is not None:
            existing_model_path(self.model_path, self.checker)
            self.model_path = str(self.model_path)
        if self.batch_size is not None:
            check_number("batch_size", self.batch_size, low=1, integer=True)
        if self.device is not None and not isinstance(self.device, str):
            raise ValueError(f"device must be a string such as 'cpu' or 'cuda'; got {self.device!r}")
        accepted = _accepted_options(get_registry().get("hallucination_checker", self.checker))
        for option in CHECKER_OPTIONS:
            if getattr(self, option) is not None and accepted is not None and option not in accepted:
                takes = ", ".join(sorted(accepted)) or "no options"
                raise ValueError(f"{option}: the {self.checker!r} checker does not take it (it takes {takes})")

    def checker_options(self) -> dict[str, Any]:
        """The options given for the checker (unset ones are left to the checker's defaults)."""
        return {option: getattr(self, option) for option in CHECKER_OPTIONS if getattr(self, option) is not None}

    def build_checker(self):
        """A new checker object for these options."""
        return get_registry().get("hallucination_checker", self.checker)(**self.checker_options())


def _accepted_options(factory) -> set[str] | None:
    """Keyword options the checker factory declares (None when it takes ``**kwargs`` or cannot be inspected)."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
        return None
    return {parameter.name for parameter in parameters if parameter.name in CHECKER_OPTIONS}
