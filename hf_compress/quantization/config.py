"""Configuration of quantization-aware training (:class:`QATConfig`)."""

from __future__ import annotations

from dataclasses import dataclass

from hf_compress.config_base import (
    CompressionConfig,
    check_bool,
    check_choice,
    check_number,
    check_regex_list,
    check_step_spec,
)
from hf_compress.quantization.grid import GRANULARITIES, MAX_BITS, MIN_BITS, SCALE_METHODS, QuantSpec
from hf_compress.registry import validate_name

ACTIVATION_MODES = ("per_token", "per_tensor")


@dataclass
class QATConfig(CompressionConfig):
    """What :class:`~hf_compress.QATCallback` fake-quantizes, and when.

    Args:
        weight_bits (`int`, *optional*, defaults to 8): weight bits, 2 to 8.
        symmetric (`bool`, *optional*, defaults to `True`): symmetric weight grid (zero point 0) or asymmetric.
        granularity (`str`, *optional*, defaults to `"per_channel"`): ``"per_tensor"``, ``"per_channel"`` (one scale
            per output channel) or ``"per_group"`` (one scale per ``group_size`` input columns of each row).
        group_size (`int`, *optional*): columns per group, required with ``per_group``; must divide every targeted
            module's ``in_features`` (checked when training begins, the error names the module).
        scale_method (`str`, *optional*, defaults to `"minmax"`): ``"minmax"`` or ``"mse"`` (MSE-optimal clipping).
        quantizer (`str`, *optional*, defaults to `"int"`): a registered ``quantizer``: ``"int"`` recomputes scales
            from the weights at every forward; ``"lsq"`` learns the scales (they join the Trainer's optimizer and are
            saved in its checkpoints). Plugins may register more (see ``hf_compress.quantization.observers``).
        scale_learning_rate (`float`, *optional*): learning rate of learned scales, in (0, 1]; defaults to the Trainer's.
        activations (`str`, *optional*): quantize the inputs of the targeted layers too: ``"per_token"`` (dynamic
            scales per token) or ``"per_tensor"`` (one static scale from an EMA observer). None: weights only.
        activation_bits (`int`, *optional*, defaults to 8): activation bits, 2 to 8.
        activation_symmetric (`bool`, *optional*, defaults to `True`): symmetric activation grid or asymmetric.
        observer_momentum (`float`, *optional*, defaults to 0.9): EMA factor of the static activation observers
            (``range = momentum * range + (1 - momentum) * batch_range``).
        freeze_observers (`int` or `float`, *optional*, defaults to 0.75): when the static activation observers stop
            updating: an optimizer step (int) or a fraction of the run (float); must come after ``start``.
        start (`int` or `float`, *optional*, defaults to 0): when fake quantization begins (float fine-tuning before).
        targets (`list[str]`, *optional*): regexes of module names; default every Linear/Conv1D of the model body.
        exclude (`list[str]`, *optional*): regexes of module names to leave in float.

    Example:

    ```python
    >>> from hf_compress import QATConfig
    >>> config = QATConfig(weight_bits=4, granularity="per_group", group_size=32, scale_method="mse")
    >>> config.weight_spec()
    QuantSpec(bits=4, symmetric=True, granularity='per_group', group_size=32)
    ```
    """

    weight_bits: int = 8
    symmetric: bool = True
    granularity: str = "per_channel"
    group_size: int | None = None
    scale_method: str = "minmax"
    quantizer: str = "int"
    scale_learning_rate: float | None = None
    activations: str | None = None
    activation_bits: int = 8
    activation_symmetric: bool = True
    observer_momentum: float = 0.9
    freeze_observers: int | float = 0.75
    start: int | float = 0
    targets: list[str] | None = None
    exclude: list[str] | None = None

    def __post_init__(self) -> None:
        check_number("weight_bits", self.weight_bits, low=MIN_BITS, high=MAX_BITS, integer=True)
        check_bool("symmetric", self.symmetric)
        self.granularity = check_choice("granularity", self.granularity, GRANULARITIES)
        if self.granularity == "per_group":
            if self.group_size is None:
                raise ValueError("group_size must be a positive integer when granularity='per_group'; got None")
            check_number("group_size", self.group_size, low=1, integer=True)
        elif self.group_size is not None:
            raise ValueError(
                f"group_size is only used with granularity='per_group'; got group_size={self.group_size!r} with "
                f"granularity={self.granularity!r} (allowed: None)"
            )
        self.scale_method = check_choice("scale_method", self.scale_method, SCALE_METHODS)
        self.quantizer = validate_name("quantizer", self.quantizer, "quantizer")
        if self.scale_learning_rate is not None:
            # a learning rate above 1 moves a log-scale by more than e per step: a typo, not a setting
            check_number("scale_learning_rate", self.scale_learning_rate, low=0.0, high=1.0, low_inclusive=False)
        if self.activations is not None:
            self.activations = check_choice("activations", self.activations, ACTIVATION_MODES)
        check_number("activation_bits", self.activation_bits, low=MIN_BITS, high=MAX_BITS, integer=True)
        check_bool("activation_symmetric", self.activation_symmetric)
        check_number("observer_momentum", self.observer_momentum, low=0.0, high=1.0, high_inclusive=False)
        check_step_spec("freeze_observers", self.freeze_observers)
        check_step_spec("start", self.start)
        if type(self.start) is type(self.freeze_observers) and self.activations == "per_tensor":
            if self.freeze_observers <= self.start:
                raise ValueError(
                    f"freeze_observers must come after start (observers need at least one step to observe); "
                    f"got freeze_observers={self.freeze_observers!r}, start={self.start!r}"
                )
        self.targets = check_regex_list("targets", self.targets)
        self.exclude = check_regex_list("exclude", self.exclude)

    def weight_spec(self) -> QuantSpec:
        """The weight grid as a :class:`~hf_compress.quantization.grid.QuantSpec`."""
        return QuantSpec(self.weight_bits, self.symmetric, self.granularity, self.group_size)

    def activation_spec(self) -> QuantSpec | None:
        """The activation grid (per-tensor spec; per-token scales are computed on the fly), or None."""
        if self.activations is None:
            return None
        return QuantSpec(self.activation_bits, self.activation_symmetric, "per_tensor", None)
