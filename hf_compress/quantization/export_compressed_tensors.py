"""Export format ``"compressed-tensors"``: the checkpoint format vLLM loads, written with the compressed-tensors package.

The QAT grid goes in unchanged: ``QuantizationScheme`` / ``QuantizationArgs`` describe it, the QAT scales and zero
points are set on the modules, and ``ModelCompressor`` compresses and writes them (``pack-quantized`` for weight-only
models, ``int-quantized`` with int8 input activations). vLLM's integer kernels take 4- and 8-bit weights, so a b-bit
grid is stored as 4-bit (b <= 4) or 8-bit: its integers are a subset of the wider grid's, so nothing changes.
Per-tensor grids are stored per channel (the same scale repeated). With activation quantization, weights are stored
as 8-bit (W8A8).

Sparsity: compressed-tensors removed its sparse compressors (``sparse-bitmask``, ``sparse-24-bitmask``) in 0.15,
and transformers 5.x refuses compressed-tensors older than 0.15; llm-compressor 0.14 itself now warns "Sparse
compression is no longer supported by compressed-tensors" and writes sparse models without it. So a sparse model
is stored in the quantized format above, where pruned zeros stay exactly zero (0 is on every grid), and its sparsity
is recorded as a ``dense``-format ``SparsityCompressionConfig`` (``global_sparsity``, ``sparsity_structure``) that
vLLM reads but does not act on: what llm-compressor writes for the same model.

compressed-tensors quantizes ``nn.Linear`` (and embeddings) only, and vLLM transposes GPT-2's ``Conv1D`` weights as
it loads them, so models with quantized Conv1D layers are refused before anything is written.

Example:

```python
from transformers import AutoModelForCausalLM
from hf_compress import export

export(model, "out/ct", format="compressed-tensors")
reloaded = AutoModelForCausalLM.from_pretrained("out/ct")  # compressed-tensors decompresses on the first forward
# vllm serve out/ct
```
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from hf_compress.quantization.export_source import ExportSource, QuantizedLayer

logger = logging.getLogger(__name__)

ASYMMETRIC_LOAD_NOTE = (
    "asymmetric pack-quantized weights: vLLM and export_compressed_tensors.load read the packed zero points; with "
    "transformers 5.24 + compressed-tensors 0.20 load with quantization_config=CompressedTensorsConfig(dequantize=True)"
)
# Record the sparsity in the config from this fraction of exactly-zero weights on (or when it is 2:4).
SPARSITY_THRESHOLD = 0.1


def storage_bits(bits: int, with_activations: bool) -> int:
    """The weight width written: 8 with activation quantization (W8A8), else 4 (b <= 4) or 8."""
    return 8 if with_activations or bits > 4 else 4


def check(source: ExportSource, options) -> list[str]:
    conv1d = [name for name, layer in source.layers.items() if layer.conv1d]
    if conv1d:
        raise ValueError(
            f"format='compressed-tensors' cannot hold {len(conv1d)} quantized transformers Conv1D layers "
            f"({', '.join(conv1d[:3])}{', ...' if len(conv1d) > 3 else ''}): compressed-tensors quantizes nn.Linear "
            "only, and vLLM transposes Conv1D (GPT-2) weights while loading them. Export this model with "
            "format='quanto' or format='dequantized'"
        )
    notes = []
    for layer in source.layers.values():
        stored = storage_bits(layer.spec.bits, layer.activation is not None)
        if stored != layer.spec.bits:
            notes.append(f"the {layer.spec.bits}-bit grid is stored as {stored}-bit integers (same values)")
            break
    if any(not layer.spec.symmetric and layer.activation is None for layer in source.layers.values()):
        notes.append(ASYMMETRIC_LOAD_NOTE)
    return notes


def quantization_args(layer: QuantizedLayer):
    """compressed-tensors ``QuantizationArgs`` for the layer's weights and (or None) input activations."""
    from compressed_tensors.quantization import QuantizationArgs

    spec = layer.spec
    group = spec.granularity == "per_group"
    weights = QuantizationArgs(
        num_bits=storage_bits(spec.bits, layer.activation is not None),
        type="int",
        symmetric=spec.symmetric,
        strategy="group" if group else "channel",
        group_size=spec.group_size if group else None,
    )
    activations = None
    if layer.activation is not None:
        activation = layer.activation
        activations = QuantizationArgs(
            num_bits=activation.spec.bits,
            type="int",
            symmetric=activation.spec.symmetric,
            strategy="token" if activation.dynamic else "tensor",
            dynamic=activation.dynamic,
        )
    return weights, activations


def quantization_config(source: ExportSource):
    """A compressed-tensors ``QuantizationConfig``: one config group per distinct scheme.

    With a single scheme the group targets ``Linear`` and ignores every other Linear (the usual llm-compressor
    shape); otherwise each group lists its modules as ``re:`` patterns.
    """
    from compressed_tensors.quantization import QuantizationConfig, QuantizationScheme

    schemes: dict[str, tuple] = {}
    members: dict[str, list[str]] = {}
    for name, layer in source.layers.items():
        weights, activations = quantization_args(layer)
        key = json.dumps([weights.model_dump(), activations.model_dump() if activations else None], sort_keys=True)
        schemes[key] = (weights, activations)
        members.setdefault(key, []).append(name)
    linear_names = [name for name, module in source.model.named_modules() if isinstance(module, nn.Linear)]
    ignore = [name for name in linear_names if name not in source.layers]
    groups = {}
    for index, (key, (weights, activations)) in enumerate(schemes.items()):
        targets = ["Linear"] if len(schemes) == 1 else [f"re:^{re.escape(name)}$" for name in members[key]]
        groups[f"group_{index}"] = QuantizationScheme(targets=targets, weights=weights, input_activations=activations)
    return QuantizationConfig(config_groups=groups, ignore=ignore, quantization_status="frozen")


def write(source: ExportSource, folder: str) -> list[str]:
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.config import SparsityCompressionConfig
    from compressed_tensors.offload import as_single_threaded
    from compressed_tensors.quantization import apply_quantization_config

    model = source.model
    # export runs on the main process only: compressed-tensors must not split the work across ranks
    with as_single_threaded():
        apply_quantization_config(model, quantization_config(source), show_progress=False)
        with torch.no_grad():
            for name, layer in source.layers.items():
                _set_qparams(model.get_submodule(name), layer)
        compressor = ModelCompressor.from_pretrained_model(model)
        compressor.compress_model(model)
        model.save_pretrained(folder)
        compressor.update_config(folder)

    notes = []
    sparsity, structure = source.sparsity()
    if sparsity >= SPARSITY_THRESHOLD or (structure == "2:4" and sparsity > 0):
        metadata = SparsityCompressionConfig.load_from_registry(
            "dense", global_sparsity=round(sparsity, 6), sparsity_structure=structure
        )
        config_file = os.path.join(folder, "config.json")
        with open(config_file) as handle:
            config = json.load(handle)
        config["quantization_config"]["sparsity_config"] = metadata.model_dump()
        with open(config_file, "w") as handle:
            json.dump(config, handle, indent=2, sort_keys=True)
        notes.append(
            f"sparsity {sparsity:.1%} ({structure}) kept as exact zeros and recorded as a dense-format "
            "sparsity_config (compressed-tensors 0.20 has no sparse compressors)"
        )
    return notes


def _set_qparams(module: nn.Module, layer: QuantizedLayer) -> None:
    """Put the layer's QAT scale / zero point (and static activation ones) on a module prepared by
    ``apply_quantization_config``."""
    if layer.spec.granularity == "per_tensor":
        scale = layer.scale.reshape(1, 1).expand(layer.out_features, 1)
        zero_point = layer.zero_point.reshape(1, 1).expand(layer.out_features, 1)
    else:
        scale, zero_point = layer.scale, layer.zero_point
    module.weight_scale.copy_(scale.to(module.weight_scale.dtype))
    if hasattr(module, "weight_zero_point"):
        module.weight_zero_point.copy_(zero_point.to(module.weight_zero_point.dtype))
    activation = layer.activation
    if activation is not None and not activation.dynamic:
        module.input_scale.copy_(activation.scale.reshape(-1)[:1].to(module.input_scale.dtype))
        if hasattr(module, "input_zero_point"):
            module.input_zero_point.copy_(activation.zero_point.reshape(-1)[:1].to(module.input_zero_point.dtype))


def load(folder: str, model_class: type[nn.Module] | None = None) -> nn.Module:
    """Reload with compressed-tensors' own code: ``apply_quantization_config``, the compressed layout, the saved
    tensors, then ``ModelCompressor.decompress_model``.

    ``AutoModelForCausalLM.from_pretrained(folder)`` (transformers' integration of the same package) works as well
    for symmetric grids. For asymmetric pack-quantized ones, transformers 5.24's default (compressed) route with
    compressed-tensors 0.20 expects unpacked zero points and fails; pass
    ``quantization_config=CompressedTensorsConfig(dequantize=True)``, which reads the packed ones as vLLM does.
    """
    import transformers
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.offload import as_single_threaded
    from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config

    from hf_compress.quantization.export_source import no_init_weights

    config = transformers.AutoConfig.from_pretrained(folder)
    if model_class is None:
        model_class = getattr(transformers, (config.architectures or ["AutoModelForCausalLM"])[0])
    raw = config.quantization_config
    quantization_config = QuantizationConfig.model_validate(raw if isinstance(raw, dict) else raw.to_dict())
    del config.quantization_config
    with no_init_weights():
        model = model_class(config)
    with as_single_threaded():  # the main process alone reloads (see write)
        apply_quantization_config(model, quantization_config, show_progress=False)
        compressor = ModelCompressor(quantization_config=quantization_config)
        compressor.compress_model(model)
        missing, unexpected = model.load_state_dict(_saved_tensors(folder), strict=False)
        tied = {key for key in missing if _is_tied(model, key)}
        if unexpected or set(missing) - tied:
            raise ValueError(
                f"{folder}: the compressed-tensors checkpoint does not match {model_class.__name__}: missing "
                f"{sorted(set(missing) - tied)[:5]}, unexpected {sorted(unexpected)[:5]}"
            )
        compressor.decompress_model(model)
    model.tie_weights()
    return model.eval()


@contextmanager
def activation_quantization_disabled(model: nn.Module) -> Iterator[None]:
    """Run a reloaded model without compressed-tensors' activation fake quantization (its weights stay as loaded)."""
    modules = [module for module in model.modules() if hasattr(module, "quantization_scheme")]
    previous = [getattr(module, "quantization_enabled", True) for module in modules]
    for module in modules:
        module.quantization_enabled = False
    try:
        yield
    finally:
        for module, enabled in zip(modules, previous):
            module.quantization_enabled = enabled


@torch.no_grad()
def activation_params_max_abs_diff(model: nn.Module, layers: dict[str, QuantizedLayer]) -> float:
    """Max |reloaded - QAT| of the static input-activation scales and zero points (0.0 when all are dynamic)."""
    largest = 0.0
    for name, layer in layers.items():
        activation = layer.activation
        if activation is None or activation.dynamic:
            continue
        module = model.get_submodule(name)
        largest = max(
            largest, (module.input_scale.float().cpu().reshape(-1) - activation.scale.reshape(-1)).abs().max().item()
        )
        zero_point = getattr(module, "input_zero_point", None)
        stored_zero = zero_point.float().cpu().reshape(-1) if zero_point is not None else torch.zeros(1)
        largest = max(largest, (stored_zero - activation.zero_point.float().reshape(-1)).abs().max().item())
    return largest


def _saved_tensors(folder: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index_file = os.path.join(folder, "model.safetensors.index.json")
    if not os.path.exists(index_file):
        return load_file(os.path.join(folder, "model.safetensors"))
    with open(index_file) as handle:
        shards = sorted(set(json.load(handle)["weight_map"].values()))
    tensors = {}
    for shard in shards:
        tensors.update(load_file(os.path.join(folder, shard)))
    return tensors


def _is_tied(model: nn.Module, key: str) -> bool:
    """Whether ``key`` is the output embedding that ``tie_weights`` shares with the input embedding."""
    output_embeddings = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output_embeddings is None or not getattr(model.config, "tie_word_embeddings", False):
        return False
    return any(key == f"{name}.weight" for name, module in model.named_modules() if module is output_embeddings)
