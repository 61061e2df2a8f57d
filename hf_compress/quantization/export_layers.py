"""The quantized model an export writes: :class:`QuantizedLayer` (one module's integer grid and, optionally, its
input-activation quantization) and :class:`ExportSource` (the hook-free copy of the model with those layers).

:func:`~hf_compress.quantization.export_source.prepare_source` builds them; every export format writes from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from hf_compress.quantization.grid import ActivationQuantParams, QuantSpec, dequantize, expand_to_weight


@dataclass
class QuantizedLayer:
    """One quantized module: its grid, integers and (optional) input-activation quantization.

    ``q`` is ``[out, in]`` (Conv1D weights are seen transposed), ``scale`` / ``zero_point`` have the storage shapes
    documented in :mod:`hf_compress.quantization.grid`.
    """

    name: str
    spec: QuantSpec
    scale: torch.Tensor
    zero_point: torch.Tensor
    q: torch.Tensor
    conv1d: bool
    activation: ActivationQuantParams | None = None
    source_zeros: torch.Tensor | None = None  # bool [out, in]: weights that were exactly zero before export

    @property
    def out_features(self) -> int:
        return self.q.shape[0]

    @property
    def in_features(self) -> int:
        return self.q.shape[1]

    def dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The ``[out, in]`` weight values the export holds."""
        return dequantize(self.q, self.spec, self.scale, self.zero_point, dtype)

    def expanded_scale(self) -> torch.Tensor:
        """``scale`` repeated to ``[out, in]``."""
        return self._expanded(self.scale)

    def expanded_zero_point(self) -> torch.Tensor:
        """``zero_point`` repeated to ``[out, in]``."""
        return self._expanded(self.zero_point)

    def _expanded(self, param: torch.Tensor) -> torch.Tensor:
        if self.spec.granularity == "per_tensor":
            return param.reshape(1, 1).expand(self.out_features, self.in_features)
        return expand_to_weight(param, self.spec, self.in_features)


@dataclass
class ExportSource:
    """A copy of the model ready to be written, and its quantized layers by module name.

    ``model`` is rebuilt from the user's config and ``state_dict``; its quantized weights hold exactly the grid values,
    and it has no hooks (activation quantization is described by ``layers[name].activation`` only).
    """

    model: nn.Module
    layers: dict[str, QuantizedLayer]
    method: str
    notes: list[str] = field(default_factory=list)
    regridded: list[str] = field(default_factory=list)  # layers a format moved to another grid (not exact)

    @property
    def has_activation_quantization(self) -> bool:
        return any(layer.activation is not None for layer in self.layers.values())

    def set_layer(self, layer: QuantizedLayer) -> None:
        """Replace a layer's grid and write its values into the copy's weight."""
        self.layers[layer.name] = layer
        module = self.model.get_submodule(layer.name)
        values = layer.dequantized(module.weight.dtype)
        with torch.no_grad():
            module.weight.copy_(values.t() if layer.conv1d else values)

    def sparsity(self) -> tuple[float, str]:
        """Fraction of exactly-zero quantized weights, and ``"2:4"`` when every group of 4 inputs has 2 zeros."""
        zeros, total, two_four = 0, 0, True
        for layer in self.layers.values():
            is_zero = layer.q == layer.expanded_zero_point()
            zeros += int(is_zero.sum())
            total += is_zero.numel()
            two_four = two_four and layer.in_features % 4 == 0 and bool((is_zero.reshape(-1, 4).sum(1) >= 2).all())
        return zeros / max(total, 1), "2:4" if two_four and total else "unstructured"

    def describe(self) -> dict:
        """The ``config.hf_compress_quantization`` dict the export carries (so it can be exported again)."""
        specs = {layer.spec for layer in self.layers.values()}
        activations = None
        first_activation = next((layer.activation for layer in self.layers.values() if layer.activation), None)
        if first_activation is not None:
            activations = dict(first_activation.spec.to_dict())
            activations["dynamic"] = first_activation.dynamic
            activations["granularity"] = "per_token" if first_activation.dynamic else "per_tensor"
        return {
            "method": self.method,
            "weights": next(iter(specs)).to_dict() if len(specs) == 1 else None,
            "activations": activations,
            "modules": list(self.layers),
        }
