"""``hf_compress.export``: write a (QAT-trained) model as a deployable quantized checkpoint, then check it.

Formats (registry kind ``export_format``; ``hf-compress export --help`` lists them):

- ``"dequantized"``: a plain transformers checkpoint whose float weights are the quantized values;
- ``"quanto"``: real int8/int4/int2 weights through optimum-quanto;
- ``"compressed-tensors"``: the checkpoint vLLM loads (``pack-quantized`` / ``int-quantized``);
- ``"onnx"`` / ``"onnx-int8"``: an ONNX graph for ONNX Runtime on CPU, float32 or int8 (the QAT grid, or ONNX
  Runtime's post-training quantization); see :mod:`hf_compress.quantization.export_onnx`.

Every export is reloaded with the format's own loader and run on a fixed batch; the max abs difference to the model
in memory is logged and returned in :class:`ExportResult`, and above ``tolerance`` an :class:`ExportVerificationError`
is raised. A model never QAT-prepared gets explicit post-training quantization first (logged), or an error with
``allow_ptq=False``. The model passed in is never modified.

Every export also prints and writes beside the model a speed report (``speed_report.md`` / ``.json``): the size,
the measured latency in the format's runtime against the PyTorch float32 model where that runtime is installed, and
which of the model's compression that runtime turns into speed
(:mod:`hf_compress.quantization.export_speed_report`).

Example:

```python
from hf_compress import QATCallback, QATConfig, export

trainer.add_callback(QATCallback(QATConfig(weight_bits=4, granularity="per_group", group_size=32)))
trainer.train()
result = export(trainer.model, "out/ct", format="compressed-tensors")
print(result.max_abs_diff, result.size_bytes)
```
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

import torch
from torch import nn

from hf_compress import __version__
from hf_compress.distributed import all_gather_objects, is_distributed, is_main_process, unwrap_model
from hf_compress.quantization.export_formats import ExportFormat, register_export_formats
from hf_compress.quantization.export_options import ExportOptions, ExportResult, ExportVerificationError
from hf_compress.quantization.export_source import prepare_source
from hf_compress.quantization.export_verify import check_weights, fixed_batch, model_outputs
from hf_compress.registry import get_registry, validate_name

__all__ = ["ExportOptions", "ExportResult", "ExportVerificationError", "export", "register_export_formats"]

logger = logging.getLogger(__name__)


def export(model: nn.Module, path: str | os.PathLike, format: str = "dequantized", **options: Any) -> ExportResult:
    """Write ``model`` as a quantized checkpoint in ``path``, reload it and check it against ``model``.

    Args:
        model (`PreTrainedModel`): a model after QAT (modules carry ``hf_compress_qparams``), a QAT model reloaded
            from disk (``config.hf_compress_quantization``), or any model (post-training quantization). Not modified.
        path (`str`): output folder (created; must be empty unless ``overwrite=True``).
        format (`str`, defaults to `"dequantized"`): a registered export format.
        **options: see :class:`ExportOptions`.

    Returns:
        `ExportResult` (on every process when distributed; only the main process writes).

    Raises:
        ValueError: unknown format or option, or a model the format cannot hold (nothing is written).
        ImportError: the format's package is missing (the message gives the pip command).
        ExportVerificationError: the reloaded export differs from the model by more than ``tolerance``, or lost zeros.

    ```python
    >>> import tempfile
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> from hf_compress import export
    >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
    ...                                      num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2))
    >>> result = export(model, tempfile.mkdtemp() + "/int8", format="dequantized")
    >>> result.method, result.max_abs_diff < 1e-3
    ('ptq', True)
    ```
    """
    registry = get_registry()
    export_format: ExportFormat = registry.get("export_format", validate_name("export_format", format, "format"))
    settings = ExportOptions.from_dict(dict(options), where="export")
    implementation = export_format.module()
    path = os.fspath(path)
    if not is_distributed():
        return _export(model, path, export_format, implementation, settings)
    result, error = None, None
    if is_main_process():
        try:
            result = _export(model, path, export_format, implementation, settings)
        except Exception as caught:  # the other ranks must learn about it instead of waiting forever
            error = caught
    outcome = all_gather_objects(result if error is None else f"{type(error).__name__}: {error}")[0]
    if error is not None:
        raise error
    if isinstance(outcome, str):
        raise RuntimeError(f"export failed on the main process: {outcome}")
    return outcome


def _export(model, path, export_format, implementation, settings: ExportOptions) -> ExportResult:
    if os.path.isfile(path) or (os.path.isdir(path) and os.listdir(path) and not settings.overwrite):
        raise ValueError(
            f"path {path!r} already exists and is not an empty folder; choose another path or pass overwrite=True"
        )
    for name in ("kv_cache", "external_data"):
        if getattr(settings, name) and export_format.name not in ("onnx", "onnx-int8"):
            raise ValueError(f"{name}=True applies to format='onnx' or 'onnx-int8'; got format={export_format.name!r}")
    if export_format.whole_model:
        return implementation.export_model(model, path, export_format, settings)
    source_model = unwrap_model(model)
    source = prepare_source(
        source_model,
        ptq_spec=settings.ptq_spec(),
        scale_method=settings.scale_method,
        targets=settings.targets,
        exclude=settings.exclude,
        allow_ptq=settings.allow_ptq,
    )
    batch = fixed_batch(source_model, settings.sample_inputs)
    reference = model_outputs(source_model, batch)
    quantized_copy = model_outputs(source.model, batch)  # the grid values, no activation quantization
    notes = list(source.notes) + list(implementation.check(source, settings))

    activation = "none"
    if source.has_activation_quantization:
        activation = "kept" if export_format.keeps_activation_quantization else "dropped"
    if activation == "dropped":
        message = (
            f"format={export_format.name!r} cannot hold the activation quantization used in QAT; the exported model "
            "runs activations in float (config.hf_compress_quantization records what QAT used). "
            "format='compressed-tensors' keeps it"
        )
        logger.warning("hf_compress export: %s", message)
        notes.append(message)

    # the weights as written (a format may have moved layers to its own grid), no activation quantization
    intended = model_outputs(source.model, batch) if source.regridded else quantized_copy
    source.model.config.hf_compress_export = {
        "format": export_format.name,
        "method": source.method,
        "activation_quantization": activation,
        "hf_compress_version": __version__,
    }

    detected, float32_bytes = _compression_before_writing(source, activation)  # a format may consume source.model
    temporary = _temporary_folder(path)
    notes += implementation.write(source, temporary)
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.replace(temporary, path)

    reloaded = implementation.load(path, type(source_model))
    outputs = model_outputs(reloaded, batch)
    weights = check_weights(reloaded, source.layers)
    float_max_abs_diff = None
    if source.method == "ptq":  # the model in memory is the float model: the export reproduces its PTQ version
        float_max_abs_diff = (outputs - reference).abs().max().item()
        reference = quantized_copy
    max_abs_diff = (outputs - reference).abs().max().item()
    activation_params_diff = None
    if source.regridded:
        checked_against = "the re-quantized weights (allow_regrid)"
        checked = (outputs - intended).abs().max().item()
    elif activation == "kept":
        # What is stored is checked exactly: the weights (outputs without activation quantization) and the static
        # activation scales. The run-time activation rounding of the format's reference forward differs slightly
        # from QAT's grid, which max_abs_diff (with activation quantization) shows.
        with implementation.activation_quantization_disabled(reloaded):
            weights_only = model_outputs(reloaded, batch)
        checked_against = "the model's weights and stored activation scales"
        checked = (weights_only - intended).abs().max().item()
        activation_params_diff = implementation.activation_params_max_abs_diff(reloaded, source.layers)
    elif activation == "dropped":
        checked_against = "the model's weights without activation quantization"
        checked = (outputs - intended).abs().max().item()
    else:
        checked_against = "the post-training-quantized model" if source.method == "ptq" else "the model in memory"
        checked = max_abs_diff
    files = sorted(os.listdir(path))
    result = ExportResult(
        format=export_format.name,
        path=path,
        method=source.method,
        layers=len(source.layers),
        max_abs_diff=max_abs_diff,
        float_max_abs_diff=float_max_abs_diff,
        checked_max_abs_diff=checked,
        checked_against=checked_against,
        activation_params_max_abs_diff=activation_params_diff,
        tolerance=settings.tolerance,
        weight_max_abs_diff=weights.max_abs_diff,
        exact_grid=not source.regridded,
        activation_quantization=activation,
        sparsity=weights.sparsity,
        zeros_kept=weights.zeros_kept,
        size_bytes=sum(os.path.getsize(os.path.join(path, name)) for name in files),
        files=files,
        notes=notes,
    )
    logger.info(
        "hf_compress export: wrote %s (%s, %d layers from %s) to %s, %.2f MB; reloaded and ran a fixed batch: "
        "max abs diff %.3g (checked against %s: %.3g, tolerance %.3g); sparsity %.1f%%",
        result.format,
        "exact grid" if result.exact_grid else "re-quantized grid",
        result.layers,
        result.method,
        path,
        result.size_bytes / 1e6,
        result.max_abs_diff,
        checked_against,
        checked,
        settings.tolerance,
        100 * result.sparsity,
    )
    _raise_if_wrong(result, reference, outputs)
    result.speed = _speed_report(
        export_format.name, source_model, detected, float32_bytes, reloaded, batch, result, settings
    )
    result.files = sorted(os.listdir(path))
    return result


def _compression_before_writing(source, activation: str):
    from hf_compress.quantization.export_speed_report import detect_compression, float32_size

    description = source.describe()
    weights = description["weights"] or {}
    kept = activation == "kept" and (description["activations"] or {}).get("granularity")
    quantization = {"bits": weights.get("bits", 8), "activations": kept, "granularity": weights.get("granularity")}
    return detect_compression(source.model, quantization), float32_size(source.model)


def _speed_report(format_name, source_model, detected, float32_bytes, reloaded, batch, result, settings) -> dict:
    """Measure the reloaded export in its runtime against a float32 copy of the model; print and write the report."""
    from hf_compress.quantization.export_source import copy_for_export
    from hf_compress.quantization.export_speed_report import (
        build_report,
        median_latencies,
        runtime_installed,
        torch_runner,
        write_report,
    )

    timings, measured = None, "not measured (speed_repeats=0)"
    if not runtime_installed(format_name):
        measured = "not measured: vLLM (the runtime of this format) needs a GPU and is not installed here"
    elif settings.speed_repeats:
        baseline = copy_for_export(source_model).float()
        batch_on_cpu = {key: value.cpu() for key, value in batch.items()}
        timings = median_latencies(
            {"exported": torch_runner(reloaded, batch_on_cpu), "pytorch_fp32": torch_runner(baseline, batch_on_cpu)},
            settings.speed_repeats,
        )
        measured = f"median of {settings.speed_repeats} interleaved runs"
    report = build_report(
        format_name,
        detected,
        result.size_bytes,
        float32_bytes,
        timings,
        list(batch["input_ids"].shape) if "input_ids" in batch else [],
        measured,
    )
    write_report(report, result.path, settings.print_report)
    return report.to_dict()


def _raise_if_wrong(result: ExportResult, reference: torch.Tensor, outputs: torch.Tensor) -> None:
    problems = []
    if not torch.isfinite(outputs).all():
        problems.append("the reloaded export produces non-finite outputs")
    if bool((outputs == 0).all()) and not bool((reference == 0).all()):
        problems.append("the reloaded export outputs only zeros")
    if result.activation_params_max_abs_diff is not None and result.activation_params_max_abs_diff > 1e-6:
        problems.append(f"stored activation scales differ by {result.activation_params_max_abs_diff:.3g}")
    if not result.zeros_kept:
        problems.append("weights that were exactly zero are not zero after reload (sparsity lost)")
    if not result.checked_max_abs_diff <= result.tolerance:
        problems.append(
            f"max abs diff {result.checked_max_abs_diff:.3g} against {result.checked_against} exceeds tolerance "
            f"{result.tolerance:.3g}"
        )
    if problems:
        raise ExportVerificationError(
            f"export to {result.path!r} (format={result.format!r}) failed its check: {'; '.join(problems)}. "
            "The files are left there to inspect; pass tolerance=... to accept a larger difference"
        )


def _temporary_folder(path: str) -> str:
    parent, name = os.path.split(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    temporary = os.path.join(parent, f".{name}.partial-{os.getpid()}")
    if os.path.isdir(temporary):
        shutil.rmtree(temporary)
    return temporary
