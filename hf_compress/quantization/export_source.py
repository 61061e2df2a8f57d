"""What an export writes: a fresh copy of the model whose quantized layers lie on their integer grid.

The quantized layers come from one of three sources, tried in this order:

1. ``"qat"``: modules that carry ``hf_compress_qparams`` (left by :class:`~hf_compress.QATCallback` at train end),
   plus ``hf_compress_act_qparams`` where activations were quantized.
2. ``"config"``: a model loaded from disk whose ``config.hf_compress_quantization`` names the quantized modules (a
   QAT model saved by the Trainer, or an earlier export). Its weights lie on the grid but the scales were not saved,
   so they are recovered exactly from the weights (:func:`recover_qparams`).
3. ``"ptq"``: anything else gets explicit post-training quantization with
   :func:`~hf_compress.quantization.grid.compute_qparams` (a log line says so).

The user's model is never changed: everything happens on a copy rebuilt from its config and ``state_dict``, exactly
as ``from_pretrained`` would rebuild the exported checkpoint.
The result is an :class:`~hf_compress.quantization.export_layers.ExportSource`.

Example:

```python
>>> from transformers import LlamaConfig, LlamaForCausalLM
>>> from hf_compress.quantization.export_source import prepare_source
>>> from hf_compress.quantization.grid import QuantSpec
>>> model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
...                                      num_attention_heads=4, num_key_value_heads=2))
>>> source = prepare_source(model, ptq_spec=QuantSpec(bits=4))
>>> source.method, len(source.layers)
('ptq', 7)
>>> layer = source.layers["model.layers.0.mlp.up_proj"]
>>> int(layer.q.abs().max()) <= 7
True
```
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import torch
from torch import nn

from hf_compress.distributed import unwrap_model
from hf_compress.quantization.export_layers import ExportSource, QuantizedLayer
from hf_compress.quantization.grid import SCALE_EPS, ActivationQuantParams, QuantSpec, compute_qparams, quantize
from hf_compress.targets import find_target_modules, in_out_features, is_conv1d, weight_out_in

logger = logging.getLogger(__name__)

CONFIG_ATTRIBUTE = "hf_compress_quantization"
# A value is "on the grid" when value / scale is within this distance of an integer.
GRID_TOLERANCE = 1e-3


# ---------------------------------------------------------------------- building the source
def prepare_source(
    model: nn.Module,
    *,
    ptq_spec: QuantSpec | None = None,
    scale_method: str = "minmax",
    targets: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    allow_ptq: bool = True,
) -> ExportSource:
    """Find (or make) the quantized layers of ``model`` and a hook-free copy holding their grid values.

    Args:
        model (`PreTrainedModel`): the model to export (DDP wrappers are looked through); not modified.
        ptq_spec (`QuantSpec`, *optional*): the grid for post-training quantization; defaults to int8 per-channel.
        scale_method (`str`): ``"minmax"`` or ``"mse"``, for post-training quantization.
        targets, exclude (`list[str]`, *optional*): module regexes for post-training quantization.
        allow_ptq (`bool`): when False, a model that was never QAT-prepared raises instead of being quantized.
    """
    model = unwrap_model(model)
    qat_modules = {name: module for name, module in model.named_modules() if hasattr(module, "hf_compress_qparams")}
    saved = getattr(getattr(model, "config", None), CONFIG_ATTRIBUTE, None)
    notes: list[str] = []
    origin = quantization_origin(model)
    if origin == "qat":
        method = "qat"
        if ptq_spec is not None or targets or exclude:
            raise ValueError(
                "bits/symmetric/granularity/group_size/targets/exclude are post-training quantization options, but "
                f"this model carries QAT parameters on {len(qat_modules)} modules; drop those options to export the "
                "QAT grid"
            )
    elif origin == "config":
        method = "config"
    else:
        method = "ptq"
        if not allow_ptq:
            raise ValueError(
                "allow_ptq=False: the model was never QAT-prepared (no module carries hf_compress_qparams and its "
                f"config has no {CONFIG_ATTRIBUTE}); train it with QATCallback first, or allow post-training "
                "quantization"
            )

    exported = copy_for_export(model)
    layers: dict[str, QuantizedLayer] = {}
    if method == "qat":
        for name, module in qat_modules.items():
            params = module.hf_compress_qparams
            activation = getattr(module, "hf_compress_act_qparams", None)
            layers[name] = _layer_from_params(name, module, params.spec, params.scale, params.zero_point, activation)
            _note_off_grid(layers[name], module, notes)
    elif method == "config":
        layers = _layers_from_config(model, saved, notes)
    else:
        spec = ptq_spec or QuantSpec()
        chosen = find_target_modules(model, targets, exclude)
        if not chosen:
            raise ValueError("targets: no Linear/Conv1D module to quantize in the model")
        logger.warning(
            "hf_compress export: the model was never QAT-prepared; applying post-training quantization "
            "(%d-bit, %s, %s, scales by %s) to %d modules with grid.compute_qparams",
            spec.bits,
            "symmetric" if spec.symmetric else "asymmetric",
            spec.granularity if spec.granularity != "per_group" else f"per_group({spec.group_size})",
            scale_method,
            len(chosen),
        )
        notes.append(f"post-training quantization: {spec.to_dict()}, scale_method={scale_method}")
        for name, module in chosen.items():
            in_features, out_features = in_out_features(module)
            spec.check_shape(out_features, in_features, where=f"module {name!r}")
            weight = weight_out_in(module.weight.detach(), module)
            scale, zero_point = compute_qparams(weight, spec, scale_method)
            layers[name] = _layer_from_params(name, module, spec, scale, zero_point, None)

    source = ExportSource(exported, {}, method, notes)
    for layer in layers.values():
        source.set_layer(layer)
    if method == "ptq" or not isinstance(getattr(exported.config, CONFIG_ATTRIBUTE, None), dict):
        exported.config.hf_compress_quantization = source.describe()  # QAT models keep the callback's description
    return source


def quantization_origin(model: nn.Module) -> str | None:
    """``"qat"`` when modules carry ``hf_compress_qparams``, ``"config"`` when the config names a QAT grid (a saved
    QAT model), else None (a model never QAT-prepared)."""
    model = unwrap_model(model)
    if any(hasattr(module, "hf_compress_qparams") for module in model.modules()):
        return "qat"
    saved = getattr(getattr(model, "config", None), CONFIG_ATTRIBUTE, None)
    if isinstance(saved, dict) and saved.get("modules") and isinstance(saved.get("weights"), dict):
        return "config"
    return None


def copy_for_export(model: nn.Module) -> nn.Module:
    """A copy of ``model`` rebuilt from its config and ``state_dict``, on CPU, in eval mode, without hooks."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "save_pretrained"):
        raise ValueError(
            f"export needs a transformers PreTrainedModel (with .config and .save_pretrained); got "
            f"{type(model).__name__}. For a PEFT model, merge the adapters first (hf_compress.merge_and_unload)"
        )
    dtype = next(model.parameters()).dtype
    with no_init_weights():
        fresh = type(model)(copy.deepcopy(config))
    fresh.to(dtype=dtype)
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    try:
        fresh.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(
            f"cannot rebuild {type(model).__name__} from its config and state_dict, so from_pretrained could not load "
            f"an export of it either: {error}"
        ) from None
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None:
        fresh.generation_config = copy.deepcopy(generation_config)
    return fresh.eval()


def no_init_weights():
    """transformers' context manager that skips weight initialisation (the weights are loaded right after)."""
    try:
        from transformers.initialization import no_init_weights as skip_init
    except ImportError:  # older transformers
        from transformers.modeling_utils import no_init_weights as skip_init
    return skip_init()


def _layer_from_params(name, module, spec, scale, zero_point, activation) -> QuantizedLayer:
    weight = weight_out_in(module.weight.detach(), module).float().cpu()
    scale = scale.detach().float().cpu()
    zero_point = zero_point.detach().to(torch.int32).cpu()
    q = quantize(weight, spec, scale, zero_point)
    return QuantizedLayer(name, spec, scale, zero_point, q, is_conv1d(module), activation, weight == 0)


def _note_off_grid(layer: QuantizedLayer, module: nn.Module, notes: list[str]) -> None:
    weight = weight_out_in(module.weight.detach(), module).float().cpu()
    distance = (layer.dequantized() - weight).abs().max().item()
    if distance > GRID_TOLERANCE * layer.scale.abs().min().item():
        message = (
            f"{layer.name}: the weight is not on its QAT grid (max |weight - grid| = {distance:.3g}); "
            "it was trained further after QAT? It is snapped to the grid"
        )
        logger.warning("hf_compress export: %s", message)
        notes.append(message)


def _layers_from_config(model: nn.Module, saved: dict, notes: list[str]) -> dict[str, QuantizedLayer]:
    weights = saved["weights"]
    spec = QuantSpec(
        bits=weights["bits"],
        symmetric=weights["symmetric"],
        granularity=weights["granularity"],
        group_size=weights.get("group_size"),
    )
    activation = None
    activations = saved.get("activations")
    if activations:
        activation_spec = QuantSpec(activations["bits"], activations["symmetric"], "per_tensor", None)
        if activations.get("dynamic"):
            activation = ActivationQuantParams(activation_spec, dynamic=True)
        else:
            message = (
                "static per-tensor activation scales are not saved in the checkpoint's config, so the exported "
                "model's activations stay in float"
            )
            logger.warning("hf_compress export: %s", message)
            notes.append(message)
    logger.info(
        "hf_compress export: recovering the %s grid of %d modules from %s in the model config",
        spec,
        len(saved["modules"]),
        CONFIG_ATTRIBUTE,
    )
    layers = {}
    for name in saved["modules"]:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(
                f"{CONFIG_ATTRIBUTE}: module {name!r} listed in the model config does not exist"
            ) from None
        weight = weight_out_in(module.weight.detach(), module).float().cpu()
        scale, zero_point, found = recover_qparams(weight, spec)
        if not bool(found.all()):
            message = (
                f"{name}: {int((~found).sum())} scale groups are not on any {spec.bits}-bit grid; they are "
                "re-quantized with min/max scales (post-training quantization)"
            )
            logger.warning("hf_compress export: %s", message)
            notes.append(message)
            fallback_scale, fallback_zero = compute_qparams(weight, spec)
            scale = torch.where(found.reshape(scale.shape), scale, fallback_scale)
            zero_point = torch.where(found.reshape(zero_point.shape), zero_point, fallback_zero)
        layers[name] = _layer_from_params(name, module, spec, scale, zero_point, activation)
    return layers


# ---------------------------------------------------------------------- recovering a grid from its values
@torch.no_grad()
def recover_qparams(
    weight_out_in: torch.Tensor, spec: QuantSpec, tolerance: float = GRID_TOLERANCE
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scale and zero point of a grid that holds ``weight_out_in`` exactly, from the values alone.

    Each scale group's values are ``k * scale`` (``k`` integer). Searching the number of grid steps spanned by the
    group's range, from the most the bits allow down to 1, finds such a scale when one exists (the first hit may be a
    finer grid than the one trained, which holds the same values just as exactly).

    Returns:
        `(scale, zero_point, found)`: storage shapes as in :mod:`hf_compress.quantization.grid`; ``found`` (bool, same
        shape) is False for groups whose values lie on no grid of ``spec.bits`` bits.

    ```python
    >>> import torch
    >>> from hf_compress.quantization.grid import QuantSpec, compute_qparams, bake_weight
    >>> spec = QuantSpec(bits=4, symmetric=False)
    >>> weight = bake_weight(torch.randn(4, 16), spec, *compute_qparams(torch.randn(4, 16), spec))
    >>> scale, zero_point, found = recover_qparams(weight, spec)
    >>> bool(found.all()), bool(torch.equal(bake_weight(weight, spec, scale, zero_point), weight))
    (True, True)
    ```
    """
    weight = weight_out_in.float()
    out_features, in_features = weight.shape
    if spec.granularity == "per_tensor":
        groups = weight.reshape(1, -1)
    elif spec.granularity == "per_channel":
        groups = weight
    else:
        spec.check_shape(out_features, in_features)
        groups = weight.reshape(-1, spec.group_size)
    low = groups.amin(dim=1).clamp(max=0.0)
    high = groups.amax(dim=1).clamp(min=0.0)
    if spec.symmetric:
        extent, offset, max_steps = torch.maximum(high, -low), torch.zeros_like(low), spec.qmax
    else:
        extent, offset, max_steps = high - low, low, spec.qmax - spec.qmin
    scale = torch.full_like(extent, SCALE_EPS)
    found = extent == 0
    for steps in range(max_steps, 0, -1):
        todo = (~found).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        candidate = extent[todo] / steps
        ratio = (groups[todo] - offset[todo, None]) / candidate[:, None]
        hit = ((ratio - ratio.round()).abs() <= tolerance).all(dim=1)
        scale[todo[hit]] = candidate[hit]
        found[todo[hit]] = True
    if spec.symmetric:
        zero_point = torch.zeros_like(scale)
    else:
        zero_point = torch.clamp(torch.round(spec.qmin - low / scale), spec.qmin, spec.qmax)
    shape = (1, 1) if spec.granularity == "per_tensor" else (out_features, -1)
    return scale.reshape(shape), zero_point.to(torch.int32).reshape(shape), found.reshape(shape)
