"""The integer grid: pure functions that compute quantization parameters and move weights onto and off the grid.

Conventions (shared by QAT and export):

- Weights are handled as ``[out_features, in_features]`` (use :func:`hf_compress.targets.weight_out_in` for Conv1D).
- Quantized integers are **signed**:
    - symmetric: ``q`` in ``[-(2**(bits-1) - 1), 2**(bits-1) - 1]`` (restricted range, e.g. int8 -> [-127, 127],
      int4 -> [-7, 7]) and ``zero_point == 0``; the grid is symmetric around an exactly representable zero.
    - asymmetric: ``q`` in ``[-2**(bits-1), 2**(bits-1) - 1]`` (e.g. int8 -> [-128, 127]) with an integer
      ``zero_point`` inside that range, so float 0.0 maps exactly to ``q == zero_point``.
- ``w ~= (q - zero_point) * scale``.
- Shapes of ``scale`` / ``zero_point`` (``zero_point`` is ``torch.int32``, ``scale`` is ``torch.float32``):
    - ``per_tensor``: ``[1, 1]``
    - ``per_channel`` (per output channel): ``[out, 1]``
    - ``per_group``: ``[out, in // group_size]``; group ``g`` of row ``o`` covers columns
      ``g * group_size : (g + 1) * group_size`` (use :func:`expand_to_weight` for a full ``[out, in]`` view).

Example:

```python
>>> import torch
>>> from hf_compress.quantization.grid import QuantSpec, compute_qparams, quantize, dequantize
>>> weight = torch.randn(8, 32)
>>> spec = QuantSpec(bits=4, symmetric=True, granularity="per_group", group_size=16)
>>> scale, zero_point = compute_qparams(weight, spec)
>>> scale.shape, zero_point.shape
(torch.Size([8, 2]), torch.Size([8, 2]))
>>> q = quantize(weight, spec, scale, zero_point)
>>> int(q.abs().max()) <= 7
True
>>> bool((dequantize(q, spec, scale, zero_point) - weight).abs().max() <= scale.max() / 2 + 1e-6)
True
```
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

GRANULARITIES = ("per_tensor", "per_channel", "per_group")
SCALE_METHODS = ("minmax", "mse")
MIN_BITS, MAX_BITS = 2, 8
# Smallest scale allowed: an all-zero row (e.g. fully pruned) gets this scale and quantizes to exactly zero.
SCALE_EPS = 1e-10
# Candidate clipping ratios searched by the MSE method: 1.0, 0.98, ..., 0.22.
MSE_CLIP_RATIOS = tuple(1.0 - 0.02 * i for i in range(40))


@dataclass(frozen=True)
class QuantSpec:
    """How one tensor is quantized.

    Args:
        bits (`int`): 2 to 8.
        symmetric (`bool`): symmetric grid with ``zero_point == 0``, or asymmetric with an integer zero point.
        granularity (`str`): ``"per_tensor"``, ``"per_channel"`` (one scale per output channel) or ``"per_group"``.
        group_size (`int`, *optional*): columns per group; required for ``per_group`` only.
    """

    bits: int = 8
    symmetric: bool = True
    granularity: str = "per_channel"
    group_size: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not MIN_BITS <= self.bits <= MAX_BITS:
            raise ValueError(f"bits must be an integer in [{MIN_BITS}, {MAX_BITS}]; got {self.bits!r}")
        if not isinstance(self.symmetric, bool):
            raise ValueError(f"symmetric must be True or False; got {self.symmetric!r}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(
                f"granularity must be one of {', '.join(map(repr, GRANULARITIES))}; got {self.granularity!r}"
            )
        if self.granularity == "per_group":
            if isinstance(self.group_size, bool) or not isinstance(self.group_size, int) or self.group_size < 1:
                raise ValueError(
                    f"group_size must be a positive integer when granularity='per_group'; got {self.group_size!r}"
                )
        elif self.group_size is not None:
            raise ValueError(
                f"group_size is only used with granularity='per_group'; got group_size={self.group_size!r} "
                f"with granularity={self.granularity!r} (set it to None)"
            )

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1)) + (1 if self.symmetric else 0)

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1

    def check_shape(self, out_features: int, in_features: int, where: str = "weight") -> None:
        """Raise a ValueError when ``group_size`` does not divide ``in_features`` (``where`` names the module)."""
        if self.granularity == "per_group" and in_features % self.group_size:
            raise ValueError(
                f"group_size={self.group_size} does not divide in_features={in_features} of {where}; "
                f"allowed: a divisor of {in_features}"
            )

    def to_dict(self) -> dict:
        return {
            "bits": self.bits,
            "symmetric": self.symmetric,
            "granularity": self.granularity,
            "group_size": self.group_size,
        }


@dataclass
class WeightQuantParams:
    """What QAT leaves on each quantized module as ``module.hf_compress_qparams`` (a plain attribute, no buffer).

    The module's weight equals ``dequantize(quantize(weight_out_in, spec, scale, zero_point), spec, scale,
    zero_point)`` exactly (in float32), so ``quantize`` of the baked weight returns the deployed integers.
    """

    spec: QuantSpec
    scale: torch.Tensor
    zero_point: torch.Tensor


@dataclass
class ActivationQuantParams:
    """Input-activation quantization left active on a module as ``module.hf_compress_act_qparams``.

    ``dynamic=True``: per-token scales computed on the fly (``scale`` / ``zero_point`` are None).
    ``dynamic=False``: one static per-tensor ``scale`` / ``zero_point`` (shape ``[1]``) from the EMA observer.
    """

    spec: QuantSpec
    dynamic: bool
    scale: torch.Tensor | None = None
    zero_point: torch.Tensor | None = None


def _grouped(weight: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """``[out, in]`` -> ``[out, groups, columns]`` (groups is 1 unless per_group)."""
    out_features, in_features = weight.shape
    if spec.granularity == "per_group":
        spec.check_shape(out_features, in_features)
        return weight.reshape(out_features, in_features // spec.group_size, spec.group_size)
    return weight.reshape(out_features, 1, in_features)


def _ungroup_params(param: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """``[out, groups, 1]`` stats -> the documented storage shape."""
    return param.reshape(param.shape[0], param.shape[1])


def _as_grouped_param(param: torch.Tensor, spec: QuantSpec, out_features: int) -> torch.Tensor:
    """Documented storage shape -> ``[out or 1, groups, 1]`` to broadcast against ``_grouped`` weights."""
    if spec.granularity == "per_tensor":
        return param.reshape(1, 1, 1)
    return param.reshape(out_features, -1, 1)


def _minmax_params(grouped: torch.Tensor, spec: QuantSpec, ratio: float = 1.0):
    """Scale and zero point of grouped weights whose range is shrunk by ``ratio`` (1.0 = full min/max)."""
    per_tensor = spec.granularity == "per_tensor"
    if spec.symmetric:  # max(max(w, 0), -min(w, 0)) is max |w|
        magnitude = grouped.abs()
        absmax = magnitude.amax().reshape(1, 1, 1) if per_tensor else magnitude.amax(dim=-1, keepdim=True)
        if ratio != 1.0:
            absmax = absmax * ratio
        scale = (absmax / spec.qmax).clamp_(min=SCALE_EPS)
        return scale, torch.zeros_like(scale)
    if per_tensor:
        low, high = torch.aminmax(grouped)
        low, high = low.reshape(1, 1, 1), high.reshape(1, 1, 1)
    else:
        low, high = torch.aminmax(grouped, dim=-1, keepdim=True)
    low = torch.clamp(low, max=0.0) * ratio  # the range always contains 0, so 0 is on the grid
    high = torch.clamp(high, min=0.0) * ratio
    scale = ((high - low) / (spec.qmax - spec.qmin)).clamp_(min=SCALE_EPS)
    zero_point = torch.clamp(torch.round(spec.qmin - low / scale), spec.qmin, spec.qmax)
    return scale, zero_point


def _fake_quant_grouped(grouped, spec, scale, zero_point):
    q = torch.clamp(torch.round(grouped * (1.0 / scale)) + zero_point, spec.qmin, spec.qmax)
    return (q - zero_point) * scale


def compute_qparams(
    weight_out_in: torch.Tensor, spec: QuantSpec, method: str = "minmax"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale (float32) and integer zero point (int32) for a ``[out, in]`` weight.

    Args:
        weight_out_in (`torch.Tensor`): ``[out, in]`` weight, any float dtype (math runs in float32).
        spec (`QuantSpec`): the grid.
        method (`str`): ``"minmax"`` (range = min/max, nothing clipped) or ``"mse"`` (per scale group, the clipping
            ratio in :data:`MSE_CLIP_RATIOS` that minimises the squared quantization error).

    Returns:
        `(scale, zero_point)` in the storage shapes documented in this module.
    """
    if method not in SCALE_METHODS:
        raise ValueError(f"scale_method must be one of {', '.join(map(repr, SCALE_METHODS))}; got {method!r}")
    if weight_out_in.dim() != 2:
        raise ValueError(f"expected a 2-D [out, in] weight, got shape {tuple(weight_out_in.shape)}")
    weight = weight_out_in.detach()  # no autograd graph for the statistics
    grouped = _grouped(weight if weight.dtype == torch.float32 else weight.float(), spec)
    scale, zero_point = _minmax_params(grouped, spec)
    if method == "mse":
        reduce_dims = (0, 1, 2) if spec.granularity == "per_tensor" else (2,)
        best_error = (
            (_fake_quant_grouped(grouped, spec, scale, zero_point) - grouped).pow(2).sum(reduce_dims, keepdim=True)
        )
        for ratio in MSE_CLIP_RATIOS[1:]:
            candidate_scale, candidate_zero = _minmax_params(grouped, spec, ratio)
            error = (_fake_quant_grouped(grouped, spec, candidate_scale, candidate_zero) - grouped).pow(2)
            error = error.sum(reduce_dims, keepdim=True)
            better = error < best_error
            best_error = torch.where(better, error, best_error)
            scale = torch.where(better, candidate_scale, scale)
            zero_point = torch.where(better, candidate_zero, zero_point)
    return _ungroup_params(scale, spec), _ungroup_params(zero_point, spec).to(torch.int32)


def quantize(
    weight_out_in: torch.Tensor, spec: QuantSpec, scale: torch.Tensor, zero_point: torch.Tensor
) -> torch.Tensor:
    """The integers (``torch.int8``) on the grid: ``clamp(round(w * (1 / scale)) + zero_point, qmin, qmax)``.

    (Multiplying by the float32 reciprocal, as torch's fused fake-quantize kernels do, keeps QAT's forward and the
    baked integers identical.)"""
    out_features = weight_out_in.shape[0]
    grouped = _grouped(weight_out_in.detach().float(), spec)
    scale_g = _as_grouped_param(scale.detach().float(), spec, out_features)
    zero_g = _as_grouped_param(zero_point.detach().float(), spec, out_features)
    q = torch.clamp(torch.round(grouped * (1.0 / scale_g)) + zero_g, spec.qmin, spec.qmax)
    return q.reshape(weight_out_in.shape).to(torch.int8)


def dequantize(
    q: torch.Tensor,
    spec: QuantSpec,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``(q - zero_point) * scale`` as a ``[out, in]`` tensor of ``dtype`` (computed in float32)."""
    out_features = q.shape[0]
    grouped = _grouped(q.float(), spec)
    scale_g = _as_grouped_param(scale.detach().float(), spec, out_features)
    zero_g = _as_grouped_param(zero_point.detach().float(), spec, out_features)
    return ((grouped - zero_g) * scale_g).reshape(q.shape).to(dtype)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` in the forward pass, identity gradient in the backward pass (straight-through estimator)."""
    # x - x.detach() is exactly zero, so the value is exactly round(x) and the gradient is exactly 1.
    return torch.round(x.detach()) + (x - x.detach())


def fake_quantize(
    weight_out_in: torch.Tensor, spec: QuantSpec, scale: torch.Tensor, zero_point: torch.Tensor
) -> torch.Tensor:
    """Quantize-dequantize with a straight-through estimator, differentiable in ``weight_out_in`` and ``scale``.

    Values are ``dequantize(quantize(w))`` (float32 math, returned in ``w``'s dtype). The gradient to ``w`` is 1
    inside the clipping range and 0 where clamped; the gradient to ``scale`` (when it requires grad) is LSQ's.
    ``zero_point`` gets no gradient.

    ```python
    >>> import torch
    >>> from hf_compress.quantization.grid import QuantSpec, compute_qparams, fake_quantize
    >>> w = torch.randn(4, 8, requires_grad=True)
    >>> spec = QuantSpec(bits=8)
    >>> fake_quantize(w, spec, *compute_qparams(w, spec)).sum().backward()
    >>> bool((w.grad == 1).all())
    True
    ```
    """
    fused = spec.granularity == "per_tensor" or spec.symmetric
    if fused and not (scale.requires_grad and torch.is_grad_enabled()):
        return _fused_fake_quantize(weight_out_in, spec, scale, zero_point)
    out_features = weight_out_in.shape[0]
    grouped = _grouped(weight_out_in.float(), spec)
    scale_g = _as_grouped_param(scale.float(), spec, out_features)
    zero_g = _as_grouped_param(zero_point.detach().float(), spec, out_features)
    q = torch.clamp(round_ste(grouped * (1.0 / scale_g)) + zero_g, spec.qmin, spec.qmax)
    return ((q - zero_g) * scale_g).reshape(weight_out_in.shape).to(weight_out_in.dtype)


def _fused_fake_quantize(weight_out_in, spec, scale, zero_point):
    """The same values and STE through torch's fused fake-quantize kernels (one kernel forward, one backward).

    Used for per-tensor grids and symmetric per-channel/per-group grids. The per-channel kernel reads an integer
    zero point back to the host (a device sync per call); a float zero point skips that check and, being exactly 0
    on symmetric grids, gives the same values.
    """
    out_features, in_features = weight_out_in.shape
    weight = weight_out_in if weight_out_in.dtype == torch.float32 else weight_out_in.float()
    scale = scale.detach()
    scale = scale if scale.dtype == torch.float32 else scale.float()
    if spec.granularity == "per_tensor":
        zero_point = zero_point.detach().to(torch.int32)
        fake = torch.fake_quantize_per_tensor_affine(
            weight, scale.reshape(()), zero_point.reshape(()), spec.qmin, spec.qmax
        )
    else:  # one row per scale: [out, in] per channel, [out * groups, group_size] per group
        spec.check_shape(out_features, in_features)
        rows = weight.reshape(-1, spec.group_size if spec.granularity == "per_group" else in_features)
        zeros = torch.zeros(rows.shape[0], dtype=torch.float32, device=rows.device)
        fake = torch.fake_quantize_per_channel_affine(rows, scale.reshape(-1), zeros, 0, spec.qmin, spec.qmax)
        fake = fake.reshape(out_features, in_features)
    return fake if fake.dtype == weight_out_in.dtype else fake.to(weight_out_in.dtype)


def expand_to_weight(param: torch.Tensor, spec: QuantSpec, in_features: int) -> torch.Tensor:
    """A scale or zero point broadcast to a full ``[out, in]`` tensor (repeats each group's value)."""
    if spec.granularity == "per_group":
        return param.repeat_interleave(spec.group_size, dim=1)
    return param.expand(param.shape[0], in_features)


def bake_weight(weight_out_in: torch.Tensor, spec: QuantSpec, scale: torch.Tensor, zero_point: torch.Tensor):
    """``dequantize(quantize(w))`` in ``w``'s dtype: the weight value that deployment will see."""
    return dequantize(quantize(weight_out_in, spec, scale, zero_point), spec, scale, zero_point, weight_out_in.dtype)


# ------------------------------------------------------------------ activations (int8, on the last dimension)
def activation_qparams_per_token(x: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic per-token scale/zero point over the last dim of ``x`` (shapes ``[..., 1]``), no gradient."""
    with torch.no_grad():
        x = x.detach().float()
        low = x.amin(dim=-1, keepdim=True).clamp(max=0.0)
        high = x.amax(dim=-1, keepdim=True).clamp(min=0.0)
        return _range_to_params(low, high, spec)


def activation_qparams_from_range(low: torch.Tensor, high: torch.Tensor, spec: QuantSpec):
    """Static scale/zero point (shape like ``low``) from an observed range, which is widened to contain 0."""
    with torch.no_grad():
        return _range_to_params(low.float().clamp(max=0.0), high.float().clamp(min=0.0), spec)


def _range_to_params(low, high, spec):
    if spec.symmetric:
        scale = (torch.maximum(high, -low) / spec.qmax).clamp(min=SCALE_EPS)
        return scale, torch.zeros_like(scale, dtype=torch.int32)
    scale = ((high - low) / (spec.qmax - spec.qmin)).clamp(min=SCALE_EPS)
    zero_point = torch.clamp(torch.round(spec.qmin - low / scale), spec.qmin, spec.qmax)
    return scale, zero_point.to(torch.int32)


def fake_quantize_activation(x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor, zero_point: torch.Tensor):
    """Quantize-dequantize an activation with the STE; ``scale`` / ``zero_point`` broadcast against ``x``.

    Math runs in float32 and the result is returned in ``x``'s dtype (bf16 under autocast stays bf16).
    """
    zero = zero_point.detach().float()
    q = torch.clamp(round_ste(x.float() * (1.0 / scale.detach().float())) + zero, spec.qmin, spec.qmax)
    return ((q - zero) * scale.detach().float()).to(x.dtype)
