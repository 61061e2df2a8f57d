"""Weight quantizers (registry kind ``quantizer``) and activation observers used during QAT.

A **weight quantizer** is a class registered with ``registry.register("quantizer", name, cls)``. The callback builds
one per targeted module as ``cls(spec, scale_method)`` and calls (every tensor is the ``[out, in]`` weight view):

- ``reset(weight_out_in)``: called when training begins (create learnable parameters here, so they can join the
  optimizer) and again when QAT starts (``start``); initialise state from the current weights.
- ``fake_quantize(weight_out_in) -> Tensor``: the differentiable fake-quantized weight used in the forward pass.
- ``qparams(weight_out_in) -> (scale, zero_point)``: the final grid (shapes as in ``grid.py``) used to bake.
- ``learnable_parameters() -> list[nn.Parameter]``: tensors the Trainer's optimizer should learn (may be empty).
- ``state_tensors() -> dict[str, Tensor]`` / ``load_state_tensors(tensors)``: what checkpoints save and restore.

Learnable parameters are added to the Trainer's optimizer as one extra param group (lr ``scale_learning_rate``,
scheduled like the Trainer's groups, no weight decay), their gradients are averaged across DDP ranks, and their
values and optimizer state are saved in the callback's checkpoint files (not in ``optimizer.pt``). Register a plugin
with ``registry.register("quantizer", "my_quantizer", MyQuantizer)`` and select it with
``QATConfig(quantizer="my_quantizer")``. Subclass :class:`WeightQuantizer` to get sensible defaults:

```python
>>> import torch
>>> from hf_compress.quantization.grid import QuantSpec, compute_qparams, fake_quantize
>>> from hf_compress.quantization.observers import WeightQuantizer
>>> class HalfRangeQuantizer(WeightQuantizer):  # clips every range to half its min/max
...     def qparams(self, weight_out_in):
...         return compute_qparams(weight_out_in * 0.5, self.spec, self.scale_method)
>>> quantizer = HalfRangeQuantizer(QuantSpec(bits=8), "minmax")
>>> quantizer.fake_quantize(torch.ones(2, 4)).tolist()
[[0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]]
```
"""

from __future__ import annotations

import torch
from torch import nn

from hf_compress.distributed import all_reduce_mean_
from hf_compress.quantization.grid import (
    SCALE_EPS,
    QuantSpec,
    activation_qparams_from_range,
    compute_qparams,
    fake_quantize,
)


class WeightQuantizer:
    """The ``"int"`` quantizer: affine integer grid with scales recomputed from the weights at every forward.

    Args:
        spec (`QuantSpec`): the grid.
        scale_method (`str`): ``"minmax"`` or ``"mse"`` (see :func:`~hf_compress.quantization.grid.compute_qparams`).
    """

    def __init__(self, spec: QuantSpec, scale_method: str = "minmax") -> None:
        self.spec = spec
        self.scale_method = scale_method

    def reset(self, weight_out_in: torch.Tensor) -> None:
        return None

    def qparams(self, weight_out_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return compute_qparams(weight_out_in, self.spec, self.scale_method)

    def fake_quantize(self, weight_out_in: torch.Tensor) -> torch.Tensor:
        scale, zero_point = self.qparams(weight_out_in)
        return fake_quantize(weight_out_in, self.spec, scale, zero_point)

    def learnable_parameters(self) -> list[nn.Parameter]:
        return []

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        return None


class LSQWeightQuantizer(WeightQuantizer):
    """The ``"lsq"`` quantizer: learned step size (Esser et al., 2020), learned in the log domain.

    The parameter is ``log_scale`` (an ``nn.Parameter`` in the storage shape of the scale), initialised from
    ``scale_method`` when QAT starts and learned by the Trainer's optimizer. Learning ``log(scale)`` keeps the scale
    positive and makes Adam's step a relative change of the scale, whatever its magnitude (LSQ's gradient scaling is
    designed for SGD on the raw scale). The zero point stays at its initial integer value, so 0.0 remains exactly
    representable.
    """

    def __init__(self, spec: QuantSpec, scale_method: str = "minmax") -> None:
        super().__init__(spec, scale_method)
        self.log_scale: nn.Parameter | None = None
        self.zero_point: torch.Tensor | None = None

    def reset(self, weight_out_in: torch.Tensor) -> None:
        scale, zero_point = compute_qparams(weight_out_in, self.spec, self.scale_method)
        log_scale = scale.to(weight_out_in.device).log()
        if self.log_scale is None:
            self.log_scale = nn.Parameter(log_scale)
        else:
            with torch.no_grad():
                self.log_scale.copy_(log_scale)
        self.zero_point = zero_point.to(weight_out_in.device)

    def _ensure(self, weight_out_in: torch.Tensor) -> None:
        if self.log_scale is None:
            self.reset(weight_out_in)

    def qparams(self, weight_out_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._ensure(weight_out_in)
        return self.log_scale.detach().exp().clamp(min=SCALE_EPS), self.zero_point.clone()

    def fake_quantize(self, weight_out_in: torch.Tensor) -> torch.Tensor:
        self._ensure(weight_out_in)
        return fake_quantize(weight_out_in, self.spec, self.log_scale.exp().clamp(min=SCALE_EPS), self.zero_point)

    def learnable_parameters(self) -> list[nn.Parameter]:
        return [self.log_scale] if self.log_scale is not None else []

    def state_tensors(self) -> dict[str, torch.Tensor]:
        if self.log_scale is None:
            return {}
        return {"log_scale": self.log_scale.detach(), "zero_point": self.zero_point}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if "log_scale" not in tensors:
            return
        with torch.no_grad():
            self.log_scale.copy_(tensors["log_scale"].to(self.log_scale.device, self.log_scale.dtype))
        self.zero_point = tensors["zero_point"].to(self.log_scale.device, torch.int32)


class EMAMinMaxObserver:
    """Per-tensor activation range tracked as an exponential moving average of each batch's min and max.

    ```python
    >>> import torch
    >>> from hf_compress.quantization.grid import QuantSpec
    >>> from hf_compress.quantization.observers import EMAMinMaxObserver
    >>> observer = EMAMinMaxObserver(QuantSpec(bits=8), momentum=0.5)
    >>> observer.observe(torch.tensor([-1.0, 2.0])); observer.observe(torch.tensor([-3.0, 4.0]))
    >>> observer.low.item(), observer.high.item()
    (-2.0, 3.0)
    ```
    """

    def __init__(self, spec: QuantSpec, momentum: float = 0.9) -> None:
        self.spec = spec
        self.momentum = momentum
        self.low: torch.Tensor | None = None
        self.high: torch.Tensor | None = None
        self.frozen = False

    @property
    def initialized(self) -> bool:
        return self.low is not None

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        if self.frozen:
            return
        x = x.detach()
        batch_low = x.min().float().reshape(1)
        batch_high = x.max().float().reshape(1)
        if self.low is None:
            self.low, self.high = batch_low, batch_high
        else:
            self.low = self.momentum * self.low + (1.0 - self.momentum) * batch_low
            self.high = self.momentum * self.high + (1.0 - self.momentum) * batch_high

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and zero point (shape ``[1]``) of the current range."""
        if self.low is None:
            raise RuntimeError("the activation observer has not seen any batch yet")
        return activation_qparams_from_range(self.low, self.high, self.spec)

    def synchronize(self) -> None:
        """Average the range across processes (collective: every rank must call it)."""
        if self.low is None:
            raise RuntimeError("the activation observer has not seen any batch yet")
        stacked = torch.cat([self.low, self.high])
        all_reduce_mean_(stacked)
        self.low, self.high = stacked[:1].clone(), stacked[1:].clone()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        if self.low is None:
            return {}
        return {"low": self.low, "high": self.high, "frozen": torch.tensor([int(self.frozen)])}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], device: torch.device) -> None:
        if "low" not in tensors:
            return
        self.low = tensors["low"].to(device, torch.float32)
        self.high = tensors["high"].to(device, torch.float32)
        self.frozen = bool(tensors["frozen"].item())
