"""Export formats ``"onnx"`` and ``"onnx-int8"``: a model ONNX Runtime runs on CPU, float32 or int8.

Why torch's exporter and onnxruntime's quantization tools, not optimum: optimum's ONNX exporter (optimum-onnx 0.1.0)
pins ``transformers<4.58`` and cannot be installed beside transformers 5.x; ``torch.onnx.export`` and
``onnxruntime.quantization`` can.

Exporter: ``exporter="torchscript"`` (the default) is torch's TorchScript-based exporter (``dynamo=False``). On
Llama, GPT-2 and BERT logits forwards with dynamic batch and sequence axes it exports in about a second and ORT
matches PyTorch to ~1e-7, also on padded batches. ``exporter="dynamo"`` (``torch.export``, needs onnxscript) matches
on unpadded positions too, but is about 10x slower to export here (7-15 s for the tiny test models). Its logits at
padded positions differ from PyTorch's (garbage there either way). The default is what the tests cover on all
three families; dynamo is the route that will stay when torch drops the TorchScript exporter.

Attention is traced eager (explicit matmul, mask and softmax) whatever the model runs with: ONNX Runtime runs that
graph faster than the SDPA trace (dynamic int8 on MiniLM 1.26-1.41x, ``benchmarks/results/onnx_eager.md``). The
model and its saved config keep their own attention setting.

What is exported: the logits forward (``input_ids``, ``attention_mask`` and, when the batch has them,
``token_type_ids``; batch and sequence axes dynamic). ``kv_cache=True`` (decoder-only causal LMs, TorchScript
exporter) adds the KV cache as inputs and outputs, so generation feeds one token per step
(:mod:`~hf_compress.quantization.export_onnx_cache`, :func:`~hf_compress.onnx_generate`); the check then also runs a
decoding step on the graph's own cache against PyTorch. Without it, a decoder export recomputes the whole sequence at
every generated token.

int8:

- a QAT-trained model (modules carry ``hf_compress_qparams``, or a saved QAT model with
  ``config.hf_compress_quantization``) carries its trained scales into the graph
  (:mod:`hf_compress.quantization.export_onnx_qat`);
- any other model gets ONNX Runtime's post-training quantization, logged: ``int8_mode="static"`` (default; needs
  ``calibration_batches``, QDQ format, int8 per-channel weights and per-tensor uint8 activations calibrated by
  min/max)
  or ``int8_mode="dynamic"`` (activation scales computed at run time, no calibration). On an x86 CPU without VNNI
  (AVX2 only), ORT's u8 x s8 kernels can saturate: there 7-bit weights (``reduce_range``) are made too, and the
  export closer to PyTorch is kept, with a note. An export made on a VNNI machine and run on an AVX2-only one can
  lose accuracy that way; export on the deployment CPU, or check it there.

Weights over 1.8 GB in float32 (protobuf holds at most 2 GB in one file), or any with ``external_data=True``, go to
``model.onnx.data`` beside ``model.onnx`` (ONNX external data: keep the two together). ONNX export of decoders needs
transformers>=5: 4.57 builds attention masks with ``torch.vmap``, which torch's exporter cannot trace (a clear error
says so).

Every export is reloaded in an ``onnxruntime.InferenceSession`` and run on the verification batch against the
PyTorch model: ``max_abs_diff`` and ``top1_agreement`` go in the result. float32 is held to ``tolerance``; int8
to ``min_top1_agreement``.

The tracing lives in :mod:`~hf_compress.quantization.export_onnx_trace`, the ONNX Runtime sessions and
post-training int8 in :mod:`~hf_compress.quantization.export_onnx_runtime`; this module writes and checks the export.

Example:

```python
from hf_compress import export

result = export(model, "out/onnx", format="onnx")
result = export(model, "out/onnx-int8", format="onnx-int8", calibration_batches=[tokenizer(texts, ...)])
```
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

import torch
from torch import nn

from hf_compress import __version__
from hf_compress.distributed import unwrap_model
from hf_compress.quantization.export_onnx_cache import (
    cache_layout,
    check_decode_step,
    decode_step_runners,
    with_positions,
)
from hf_compress.quantization.export_onnx_runtime import (  # noqa: F401 (INPUT_NAMES: public here too)
    INPUT_NAMES,
    SLOW_FUSIONS,
    count_int8_matmuls,
    inference_session,
    ort_post_training_int8,
    session_feed,
    session_outputs,
)
from hf_compress.quantization.export_onnx_trace import (  # noqa: F401 (OnnxExportError, LogitsForward: public here too)
    LogitsForward,
    OnnxExportError,
    onnx_inputs,
    trace_to_onnx,
)
from hf_compress.quantization.export_options import ExportResult, ExportVerificationError
from hf_compress.quantization.export_source import copy_for_export, prepare_source, quantization_origin
from hf_compress.quantization.export_verify import fixed_batch, model_outputs

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
# protobuf caps a serialized ModelProto at 2 GB: larger weights go to ONNX's external data file beside the graph
EXTERNAL_DATA_ABOVE_BYTES = 1_800_000_000


def save_graph(graph, file: str, external: bool) -> None:
    """Write ``graph`` to ``file``; with ``external``, its weights to ``<file>.data`` beside it (ONNX external data,
    which ONNX Runtime loads from the same folder)."""
    import onnx

    if external:
        location = os.path.basename(file) + ".data"
        onnx.save_model(graph, file, save_as_external_data=True, all_tensors_to_one_file=True, location=location)
    else:
        onnx.save_model(graph, file)


EXPORTERS = ("torchscript", "dynamo")
INT8_MODES = ("static", "dynamic")
DEFAULT_OPSET = 17


def require_onnx(format_name: str, exporter: str = "torchscript") -> None:
    """Raise a MissingExtraError naming the ``onnx`` extra when onnx / onnxruntime (or onnxscript for dynamo) is
    missing."""
    from hf_compress.extras import require_extra

    for package in ["onnx", "onnxruntime"] + (["onnxscript"] if exporter == "dynamo" else []):
        require_extra(package, "onnx", f"export format {format_name!r}")


# ---------------------------------------------------------------------- the export
def export_model(model: nn.Module, path: str, export_format, settings):
    """Write ``model`` as ``path/model.onnx`` (+ ``config.json``), reload it in ONNX Runtime and check it."""
    import onnx

    from hf_compress.quantization.export_speed_report import (
        build_report,
        detect_compression,
        float32_size,
        median_latencies,
        torch_runner,
        write_report,
    )

    int8 = export_format.name == "onnx-int8"
    require_onnx(export_format.name, settings.exporter)
    if settings.ptq_spec() is not None or settings.targets or settings.exclude:
        raise ValueError(
            f"format={export_format.name!r} takes no bits/symmetric/granularity/group_size/targets/exclude: int8 "
            "comes from QAT or from ONNX Runtime's quantizer (int8_mode='static' or 'dynamic')"
        )
    source_model = unwrap_model(model)
    origin = quantization_origin(source_model) if int8 else None
    source = None
    if int8 and origin is not None:
        from hf_compress.quantization.export_onnx_qat import check_grids

        source = prepare_source(source_model)
        check_grids(source)
        exported = source.model
    else:
        if int8 and settings.int8_mode == "static" and settings.calibration_batches is None:
            raise ValueError(
                "format='onnx-int8' with int8_mode='static' needs calibration data for a model that was never "
                "QAT-trained: pass calibration_batches=[batch, ...] (dicts with input_ids and attention_mask, e.g. "
                "tokenizer(texts, padding=True, return_tensors='pt'), a few dozen representative examples; CLI: "
                "--calibration-file FILE), or int8_mode='dynamic' (no calibration), or train with QATCallback"
            )
        if int8 and not settings.allow_ptq:
            raise ValueError(
                "allow_ptq=False: the model was never QAT-prepared; train it with QATCallback first, or allow "
                "post-training quantization"
            )
        exported = copy_for_export(source_model)
    exported = exported.float()

    batch = onnx_inputs(exported, fixed_batch(source_model, settings.sample_inputs))
    cache = None
    if settings.kv_cache:
        if settings.exporter != "torchscript":
            raise ValueError("kv_cache=True needs exporter='torchscript' (the dynamo route exports no KV cache yet)")
        cache = cache_layout(exported, batch)
    # a KV-cache graph counts positions from the attention mask, as generate() does: so does its reference
    reference_batch = with_positions(batch) if cache is not None else batch
    notes = list(source.notes) if source is not None else []
    if int8:
        reference = model_outputs(source_model, reference_batch)
    else:  # float32 holds the weights as they are; activation quantization from QAT is not part of it
        reference = model_outputs(exported, reference_batch)
        if any(hasattr(module, "hf_compress_act_qparams") for module in source_model.modules()):
            message = (
                "format='onnx' is float32: the QAT activation quantization is not in the graph (format='onnx-int8' "
                "keeps it); checked against the model's weights without it"
            )
            logger.warning("hf_compress export: %s", message)
            notes.append(message)
    external = settings.external_data
    if external is None:
        external = float32_size(exported) > EXTERNAL_DATA_ABOVE_BYTES
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.partial-", dir=parent)
    try:
        float_file = os.path.join(temporary, "float.onnx")
        trace_to_onnx(exported, batch, float_file, settings.exporter, settings.opset, cache=cache)
        folder = os.path.join(temporary, "out")
        os.makedirs(folder)
        final_file = os.path.join(folder, ONNX_FILE)
        method, layers, activation = "none", 0, "none"
        weight_diff, exact, zeros_kept, sparsity = 0.0, True, True, 0.0
        quantization = None
        if not int8:
            save_graph(onnx.load(float_file), final_file, external)
        elif source is not None:
            from hf_compress.quantization.export_onnx_qat import apply_trained_grid

            graph = onnx.load(float_file)
            rewrite = apply_trained_grid(graph, source)
            save_graph(graph, final_file, external)
            method, layers = source.method, rewrite.layers
            weight_diff, zeros_kept, sparsity = rewrite.weight_max_abs_diff, rewrite.zeros_kept, rewrite.sparsity
            activation = "kept" if rewrite.static_activation_layers else "dynamic"
            notes += rewrite.notes
            description = source.describe()
            quantization = {
                "bits": description["weights"]["bits"] if description["weights"] else 8,
                "activations": "static" if rewrite.static_activation_layers else "dynamic",
                "granularity": (description["weights"] or {}).get("granularity"),
            }
            logger.info(
                "hf_compress export: onnx-int8 carries the trained %s grid of %d modules (%d with trained static "
                "activation scales, %d with dynamic activations)",
                method,
                rewrite.layers,
                rewrite.static_activation_layers,
                rewrite.dynamic_activation_layers,
            )
        else:
            logger.warning(
                "hf_compress export: the model was never QAT-prepared; applying ONNX Runtime's %s post-training "
                "int8 quantization",
                settings.int8_mode,
            )
            notes += ort_post_training_int8(
                float_file, final_file, settings.int8_mode, settings.calibration_batches, batch, reference, external
            )
            method, exact = f"ptq-{settings.int8_mode}", False
            activation = "kept" if settings.int8_mode == "static" else "dynamic"
            layers = count_int8_matmuls(onnx.load(final_file, load_external_data=False))
            quantization = {"bits": 8, "activations": settings.int8_mode, "granularity": "per_channel"}
        exported.config.hf_compress_export = {
            "external_data": external,
            "format": export_format.name,
            "method": method,
            "activation_quantization": activation,
            "exporter": settings.exporter,
            "opset": settings.opset,
            "kv_cache": cache is not None,
            "hf_compress_version": __version__,
        }
        exported.config.save_pretrained(folder)
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(folder, path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)

    session = inference_session(os.path.join(path, ONNX_FILE))
    outputs = session_outputs(session, batch)
    max_abs_diff = (outputs - reference).abs().max().item()
    top1 = (outputs.argmax(-1) == reference.argmax(-1)).float().mean().item()
    problems = []
    if cache is not None:
        step_diff, step_top1 = check_decode_step(session, source_model if int8 else exported, batch)
        notes.append(
            f"KV cache: {cache.layers} layers of {cache.heads} x {cache.head_size}; a decoding step fed the graph's "
            f"own presents matches PyTorch on the whole sequence to max abs diff {step_diff:.3g}, top-1 "
            f"{step_top1:.0%}; generate with hf_compress.onnx_generate"
        )
        # float32: held to the tolerance; int8: no further from PyTorch than the full forward is (a step checks few
        # positions, too few for a top-1 rate to mean much)
        allowed = 2 * max_abs_diff + settings.tolerance if int8 else settings.tolerance
        if not step_diff <= allowed:
            problems.append(f"the KV-cache decoding step differs by {step_diff:.3g} (allowed {allowed:.3g})")
    files = sorted(os.listdir(path))
    result = ExportResult(
        format=export_format.name,
        path=path,
        method=method,
        layers=layers,
        max_abs_diff=max_abs_diff,
        float_max_abs_diff=max_abs_diff if int8 and source is None else None,
        checked_max_abs_diff=max_abs_diff,
        checked_against="the PyTorch model in memory (ONNX Runtime session)",
        activation_params_max_abs_diff=None,
        tolerance=settings.tolerance,
        weight_max_abs_diff=weight_diff,
        exact_grid=exact,
        activation_quantization=activation,
        sparsity=sparsity,
        zeros_kept=zeros_kept,
        size_bytes=sum(os.path.getsize(os.path.join(path, name)) for name in files),
        files=files,
        notes=notes,
        top1_agreement=top1,
    )
    logger.info(
        "hf_compress export: wrote %s (%s) to %s, %.2f MB; reloaded in ONNX Runtime: max abs diff %.3g, top-1 "
        "agreement %.1f%%",
        result.format,
        method,
        path,
        result.size_bytes / 1e6,
        max_abs_diff,
        100 * top1,
    )
    if not torch.isfinite(outputs).all():
        problems.append("the ONNX model produces non-finite outputs")
    if not zeros_kept:
        problems.append("weights that were exactly zero are not zero in the graph (sparsity lost)")
    if weight_diff > 1e-6:
        problems.append(f"the int8 weights in the graph differ from the trained grid by {weight_diff:.3g}")
    if not int8 and not max_abs_diff <= settings.tolerance:
        problems.append(f"max abs diff {max_abs_diff:.3g} exceeds tolerance {settings.tolerance:.3g}")
    if int8 and top1 < settings.min_top1_agreement:
        problems.append(f"top-1 agreement {top1:.1%} is below min_top1_agreement={settings.min_top1_agreement:.1%}")
    if problems:
        raise ExportVerificationError(
            f"export to {path!r} (format={export_format.name!r}) failed its check: {'; '.join(problems)}. The files "
            "are left there to inspect; pass tolerance=... / min_top1_agreement=... to accept a larger difference"
        )

    timings, measured = None, "not measured (speed_repeats=0)"
    if settings.speed_repeats:
        baseline = copy_for_export(source_model).float()
        feed = session_feed(session, batch)
        runs = {"exported": lambda: session.run(None, feed), "pytorch_fp32": torch_runner(baseline, batch)}
        if cache is not None:
            runs.update(decode_step_runners(session, baseline, batch))
        timings = median_latencies(runs, settings.speed_repeats)
        measured = (
            f"median of {settings.speed_repeats} interleaved runs; ONNX Runtime session as hf_compress.onnx_session "
            f"with spin=False ({', '.join(SLOW_FUSIONS)} off, threads not spinning)"
        )
    report = build_report(
        export_format.name,
        detect_compression(exported, quantization),
        result.size_bytes,
        float32_size(exported),
        timings,
        list(batch["input_ids"].shape),
        measured,
    )
    write_report(report, path, settings.print_report)
    result.speed = report.to_dict()
    result.files = sorted(os.listdir(path))
    return result
