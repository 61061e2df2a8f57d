"""In-place slicing of the modules a structure runs through: Linear / Conv1D rows and columns, embeddings, norms.

Each function replaces the module's parameters with new, smaller ``nn.Parameter`` objects and updates the
attributes that record its size (``in_features``/``out_features``, ``nf``, ``embedding_dim``, ``normalized_shape``).
"""

from __future__ import annotations

import torch
from torch import nn

from hf_compress.targets import is_conv1d


def _parameter(data: torch.Tensor, like: nn.Parameter) -> nn.Parameter:
    return nn.Parameter(data.detach().clone().contiguous(), requires_grad=like.requires_grad)


def slice_linear_(module: nn.Module, outputs: torch.Tensor | None = None, inputs: torch.Tensor | None = None) -> None:
    """Keep the output features ``outputs`` and input features ``inputs`` (index tensors) of a Linear or Conv1D."""
    weight = module.weight.data
    conv1d = is_conv1d(module)
    out_dim, in_dim = (1, 0) if conv1d else (0, 1)
    if outputs is not None:
        weight = weight.index_select(out_dim, outputs.to(weight.device))
        if getattr(module, "bias", None) is not None:
            module.bias = _parameter(module.bias.data.index_select(0, outputs.to(weight.device)), module.bias)
    if inputs is not None:
        weight = weight.index_select(in_dim, inputs.to(weight.device))
    module.weight = _parameter(weight, module.weight)
    if conv1d:
        module.nf = weight.shape[1]
        if hasattr(module, "nx"):
            module.nx = weight.shape[0]
    else:
        module.out_features, module.in_features = weight.shape


def slice_embedding_(module: nn.Embedding, channels: torch.Tensor) -> None:
    module.weight = _parameter(module.weight.data.index_select(1, channels.to(module.weight.device)), module.weight)
    module.embedding_dim = module.weight.shape[1]


def slice_norm_(module: nn.Module, channels: torch.Tensor, scale: float = 1.0) -> None:
    """Keep ``channels`` of a LayerNorm / RMSNorm; ``scale`` multiplies the kept weights (RMS compensation)."""
    for name in ("weight", "bias"):
        parameter = getattr(module, name, None)
        if isinstance(parameter, nn.Parameter):
            data = parameter.data.index_select(0, channels.to(parameter.device))
            if name == "weight" and scale != 1.0:
                data = data * scale
            setattr(module, name, _parameter(data, parameter))
    if isinstance(module, nn.LayerNorm):
        module.normalized_shape = (len(channels),)


def zero_rows_(module: nn.Module, rows: torch.Tensor, *, bias: bool = True) -> None:
    """Zero output features ``rows`` (and their bias) of a Linear / Conv1D."""
    with torch.no_grad():
        if is_conv1d(module):
            module.weight[:, rows] = 0
        else:
            module.weight[rows] = 0
        if bias and getattr(module, "bias", None) is not None:
            module.bias[rows] = 0


def zero_columns_(module: nn.Module, columns: torch.Tensor) -> None:
    """Zero input features ``columns`` of a Linear / Conv1D."""
    with torch.no_grad():
        if is_conv1d(module):
            module.weight[columns] = 0
        else:
            module.weight[:, columns] = 0


def rows_are_zero(module: nn.Module, *, bias: bool = True) -> torch.Tensor:
    """Per output feature: True where the weight row (and the bias) are all zero."""
    weight = module.weight.detach()
    zero = (weight == 0).all(dim=0) if is_conv1d(module) else (weight == 0).all(dim=1)
    if bias and getattr(module, "bias", None) is not None:
        zero = zero & (module.bias.detach() == 0)
    return zero


def columns_are_zero(module: nn.Module) -> torch.Tensor:
    """Per input feature: True where the weight column is all zero."""
    weight = module.weight.detach()
    return (weight == 0).all(dim=1) if is_conv1d(module) else (weight == 0).all(dim=0)
