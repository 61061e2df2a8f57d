"""Export format ``"quanto"``: real integer weights through optimum-quanto, built from the QAT integers.

quanto stores int8 weights symmetric with one scale per output channel, and int4/int2 weights affine (scale and
integer zero point) per group of ``G`` input columns, where quanto itself picks ``G`` from ``in_features`` (128, else
96, 64 or 32 when they divide it, else one group per row). A b-bit grid is written into the smallest quanto type
with at least b bits, which holds it exactly when its scale groups line up with quanto's:

- per-tensor and per-channel grids always fit;
- a per-group grid fits int4/int2 when quanto's ``G`` divides the group size; int8 has no groups;
- an asymmetric 8-bit grid does not fit quanto's zero-point-free int8 (2 to 7 bits do).

Otherwise the export stops before writing, unless ``allow_regrid=True`` re-quantizes those layers onto quanto's grid
(the difference is reported). quanto only quantizes ``nn.Linear``: GPT-2's ``Conv1D`` layers are converted to
``nn.Linear`` (weights transposed) and listed in ``config.hf_compress_export["conv1d_as_linear"]``, which
:func:`load` reads back.

Example:

```python
from hf_compress import export
from hf_compress.quantization.export_quanto import load

export(model, "out/quanto", format="quanto")
reloaded = load("out/quanto")  # optimum.quanto.requantize under the hood
# models without Conv1D also reload with quanto's own class:
# optimum.quanto.QuantizedModelForCausalLM.from_pretrained("out/quanto")
```
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, replace

import torch
from torch import nn

from hf_compress.quantization.export_source import ExportSource, QuantizedLayer
from hf_compress.quantization.grid import QuantSpec, compute_qparams, quantize
from hf_compress.targets import is_conv1d

logger = logging.getLogger(__name__)

QMAP_FILE = "quanto_qmap.json"


@dataclass
class QuantoLayout:
    """A layer's integers in quanto's storage: ``data`` (int8 for qint8, uint8 otherwise), ``scale`` and ``shift``
    (integer zero point, qint4/qint2 only), both ``[rows or groups, 1]``; ``group_size`` None means one per row."""

    bits: int
    data: torch.Tensor
    scale: torch.Tensor
    shift: torch.Tensor | None
    group_size: int | None


class NotRepresentable(ValueError):
    """The layer's grid cannot be written exactly in quanto's layout."""


def quanto_bits(bits: int) -> int:
    """The smallest quanto integer type (2, 4 or 8 bits) that holds a ``bits``-bit grid."""
    return 2 if bits <= 2 else 4 if bits <= 4 else 8


def quanto_group_size(in_features: int) -> int | None:
    """The int4/int2 group size optimum-quanto 0.2 picks for a layer (mirrors ``QModuleMixin.__init__``)."""
    group_size = 128
    if in_features > group_size:
        while in_features % group_size != 0 and group_size > 32:
            group_size -= 32
        if in_features % group_size == 0:
            return group_size
    return None


def quanto_layout(layer: QuantizedLayer) -> QuantoLayout:
    """The layer's integers in quanto's layout, exactly; raises :class:`NotRepresentable` with the reason.

    ```python
    >>> import torch
    >>> from hf_compress.quantization.grid import QuantSpec, compute_qparams, quantize
    >>> from hf_compress.quantization.export_source import QuantizedLayer
    >>> weight, spec = torch.randn(4, 16), QuantSpec(bits=4, symmetric=True)
    >>> scale, zero = compute_qparams(weight, spec)
    >>> layout = quanto_layout(QuantizedLayer("fc", spec, scale, zero, quantize(weight, spec, scale, zero), False))
    >>> layout.bits, layout.group_size, int(layout.data.min()) >= 1, int(layout.shift[0, 0])
    (4, None, True, 8)
    ```
    """
    spec = layer.spec
    bits = quanto_bits(spec.bits)
    q = layer.q.to(torch.int32)
    scale = layer.expanded_scale()
    zero_point = layer.expanded_zero_point().to(torch.int32)
    if bits == 8:
        if not bool((scale == scale[:, :1]).all()):
            raise NotRepresentable(
                f"{layer.name}: quanto's int8 weights have one scale per output channel, but the grid is "
                f"per_group({spec.group_size})"
            )
        data = q - zero_point
        if int(data.min()) < -128 or int(data.max()) > 127:
            raise NotRepresentable(
                f"{layer.name}: quanto's int8 has no zero point and q - zero_point spans "
                f"[{int(data.min())}, {int(data.max())}] (an asymmetric 8-bit grid)"
            )
        return QuantoLayout(8, data.to(torch.int8), scale[:, :1].clone(), None, None)
    group_size = quanto_group_size(layer.in_features)
    columns = group_size or layer.in_features
    scale_groups = scale.reshape(-1, columns)
    zero_groups = zero_point.reshape(-1, columns)
    if not bool((scale_groups == scale_groups[:, :1]).all() and (zero_groups == zero_groups[:, :1]).all()):
        quanto_grouping = f"groups of {group_size} columns" if group_size else "one scale per output channel"
        raise NotRepresentable(
            f"{layer.name}: quanto picks {quanto_grouping} for in_features={layer.in_features}, which does not "
            f"line up with the grid's per_group({spec.group_size})"
        )
    offset = 2 ** (spec.bits - 1)  # signed grid integers -> quanto's unsigned storage
    data = (q + offset).reshape(-1, columns)
    shift = zero_groups[:, :1] + offset
    if group_size is None:
        data = data.reshape(layer.out_features, layer.in_features)
    return QuantoLayout(bits, data.to(torch.uint8), scale_groups[:, :1].clone(), shift.to(torch.uint8), group_size)


def regrid(layer: QuantizedLayer) -> QuantizedLayer:
    """The layer re-quantized (min/max scales) onto quanto's own grid for its size."""
    bits = quanto_bits(layer.spec.bits)
    group_size = None if bits == 8 else quanto_group_size(layer.in_features)
    spec = QuantSpec(
        bits=bits,
        symmetric=bits == 8,
        granularity="per_group" if group_size else "per_channel",
        group_size=group_size,
    )
    weight = layer.dequantized()
    scale, zero_point = compute_qparams(weight, spec)
    return replace(layer, spec=spec, scale=scale, zero_point=zero_point, q=quantize(weight, spec, scale, zero_point))


def check(source: ExportSource, options) -> list[str]:
    """Stop when a layer's grid does not fit quanto, unless ``options.allow_regrid`` moves it onto quanto's grid."""
    notes, problems = [], []
    for name, layer in list(source.layers.items()):
        try:
            quanto_layout(layer)
            continue
        except NotRepresentable as reason:
            if not options.allow_regrid:
                problems.append(str(reason))
                continue
            moved = regrid(layer)
            change = (moved.dequantized() - layer.dequantized()).abs().max().item()
            source.set_layer(moved)
            source.regridded.append(name)
            notes.append(f"{reason}; re-quantized onto {moved.spec} (max weight change {change:.3g})")
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise ValueError(
            f"format='quanto' cannot hold this grid exactly: {shown}. Options: quantize per_channel (or with a "
            "group_size that quanto's group size divides), export format='compressed-tensors' or 'dequantized', or "
            "pass allow_regrid=True to re-quantize those layers onto quanto's grid (the difference is reported)"
        )
    for note in notes:
        logger.warning("hf_compress export: %s", note)
    conv1d = [name for name, layer in source.layers.items() if layer.conv1d]
    if conv1d:
        notes.append(
            f"quanto quantizes nn.Linear only: {len(conv1d)} Conv1D layers are stored as nn.Linear (transposed); "
            "reload with hf_compress.quantization.export_quanto.load"
        )
    return notes


def write(source: ExportSource, folder: str) -> list[str]:
    from optimum.quanto import qtypes, quantize
    from optimum.quanto.models import QuantizedTransformersModel
    from optimum.quanto.tensor.weights import WeightQBitsTensor, WeightQBytesTensor

    model = source.model
    converted = [name for name, layer in source.layers.items() if layer.conv1d]
    for name in converted:
        _replace_with_linear(model, name, copy_weights=True)
    layouts = {name: quanto_layout(layer) for name, layer in source.layers.items()}
    for bits in sorted({layout.bits for layout in layouts.values()}):
        names = [name for name, layout in layouts.items() if layout.bits == bits]
        quantize(model, weights=qtypes[f"qint{bits}"], include=names)
    for name, layout in layouts.items():
        module = model.get_submodule(name)
        if module.weight_group_size != layout.group_size:
            raise RuntimeError(
                f"{name}: optimum-quanto picked group size {module.weight_group_size}, hf_compress expected "
                f"{layout.group_size}; this optimum-quanto version is not supported"
            )
        dtype = module.weight.dtype
        size, stride = module.weight.size(), module.weight.stride()
        qtype = qtypes[f"qint{layout.bits}"]
        if layout.bits == 8:
            tensor = WeightQBytesTensor.create(qtype, 0, size, stride, layout.data, layout.scale.to(dtype))
        else:
            tensor = WeightQBitsTensor.create(
                qtype, 0, layout.group_size, size, stride, layout.data, layout.scale.to(dtype), layout.shift
            )
        module.weight = nn.Parameter(tensor, requires_grad=False)
    model.config.hf_compress_export["conv1d_as_linear"] = converted
    QuantizedTransformersModel(model).save_pretrained(folder)
    return []


def load(folder: str, model_class: type[nn.Module] | None = None) -> nn.Module:
    """Reload a quanto export with optimum-quanto's ``requantize`` (Conv1D layers come back as nn.Linear)."""
    import transformers
    from accelerate import init_empty_weights
    from optimum.quanto import requantize
    from optimum.quanto.models.shared_dict import ShardedStateDict
    from safetensors.torch import load_file

    config = transformers.AutoConfig.from_pretrained(folder)
    if model_class is None:
        model_class = getattr(transformers, (config.architectures or ["AutoModelForCausalLM"])[0])
    with init_empty_weights():
        model = model_class(config)
    for name in (getattr(config, "hf_compress_export", None) or {}).get("conv1d_as_linear", []):
        _replace_with_linear(model, name, copy_weights=False)
    with open(os.path.join(folder, QMAP_FILE)) as handle:
        quantization_map = json.load(handle)
    index_file = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index_file):
        with open(index_file) as handle:
            state_dict = ShardedStateDict(folder, json.load(handle)["weight_map"])
    else:
        state_dict = load_file(os.path.join(folder, "model.safetensors"))
    requantize(model, state_dict=state_dict, quantization_map=quantization_map)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    return model.eval()


def _replace_with_linear(model: nn.Module, name: str, copy_weights: bool) -> None:
    conv = model.get_submodule(name)
    if not is_conv1d(conv):
        raise ValueError(f"{name} is a {type(conv).__name__}, not the Conv1D the export converted")
    in_features, out_features = conv.weight.shape
    linear = nn.Linear(
        in_features, out_features, bias=conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype
    )
    if copy_weights:
        with torch.no_grad():
            linear.weight.copy_(conv.weight.t())
            if conv.bias is not None:
                linear.bias.copy_(conv.bias)
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, linear)
