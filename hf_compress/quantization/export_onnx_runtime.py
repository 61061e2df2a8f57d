"""ONNX Runtime's side of the ONNX export: CPU inference sessions on an exported graph, and ONNX Runtime's own
post-training int8 quantization of it (for a model that was never QAT-trained).

Used by :mod:`hf_compress.quantization.export_onnx`; the benchmarks time exports with :func:`inference_session`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

import torch

from hf_compress.quantization.export_onnx_cache import PAST_PREFIX, empty_past_feed, empty_past_for_graph

logger = logging.getLogger(__name__)

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


# ONNX Runtime graph fusions that made hf-compress's exports slower where measured, so its sessions turn them off.
# SkipLayerNormFusion merges a residual Add into the next LayerNorm. ORT 1.32's CPU kernel for the merged op ran MiniLM's
# 12 of them in 21 ms per 16 x 128 batch (1 thread), against 6.5 ms unfused: dynamic int8 MiniLM ran 1.08-1.18x
# faster with the fusion off; the Llama teacher and GPT-2 moved 0.99-1.05x (benchmarks/results/onnx_session.md).
SLOW_FUSIONS = ("SkipLayerNormFusion",)


def inference_session(
    file: str, threads: int | None = None, spin: bool = False, disabled_fusions: tuple[str, ...] = SLOW_FUSIONS
):
    """An ``onnxruntime.InferenceSession`` on CPU with all graph optimisations but ``disabled_fusions``
    (``threads`` intra-op threads). ``disabled_fusions=()`` is ORT's default set, which the benchmarks compare with.

    By default its threads do not spin-wait between runs (ONNX Runtime's default is to spin): the export check and
    speed report time ONNX Runtime and PyTorch in turns in one process, and spinning ORT threads would take the cores
    PyTorch's threads need. ``spin=True`` keeps ORT's default, for a process that runs only ORT.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(
        file, options, providers=["CPUExecutionProvider"], disabled_optimizers=list(disabled_fusions)
    )


def onnx_session(path: str | os.PathLike, threads: int | None = None, spin: bool = True):
    """Load an ONNX export for CPU inference: ONNX Runtime with all graph optimisations except :data:`SLOW_FUSIONS`.

    Args:
        path: the folder ``export(..., format="onnx" | "onnx-int8")`` wrote, or its ``model.onnx``.
        threads (`int`, *optional*): intra-op threads; defaults to ``torch.get_num_threads()``.
        spin (`bool`): let idle ORT threads spin-wait between ops (ORT's default). Faster when ORT has the cores to
            itself: int8 MiniLM at 2 threads, 1 x 128, ran 1.3x faster spinning than not, timed alone
            (``benchmarks/results/onnx_session.md``). Pass False when other work shares the cores; the export's
            speed report times with False, in turns with PyTorch.

    Returns an ``onnxruntime.InferenceSession``. A plain ``InferenceSession`` runs the same graph with the same
    outputs, slower where those fusions fire (a BERT-style encoder: about 1.15x).

    Example:

    ```python
    from hf_compress import export, onnx_session

    export(model, "out/onnx-int8", format="onnx-int8", int8_mode="dynamic")
    session = onnx_session("out/onnx-int8")
    batch = tokenizer(["a great film"], return_tensors="np")
    logits = session.run(None, {node.name: batch[node.name] for node in session.get_inputs()})[0]
    ```
    """
    from hf_compress.extras import require_extra

    require_extra("onnxruntime", "onnx", "onnx_session")
    file = os.fspath(path)
    if os.path.isdir(file):
        file = os.path.join(file, "model.onnx")
    if not os.path.isfile(file):
        raise FileNotFoundError(f"onnx_session: no ONNX model at {file!r}; pass an export folder or its model.onnx")
    return inference_session(file, threads, spin=spin)


def session_feed(session, batch: dict[str, torch.Tensor]) -> dict:
    """The numpy feed of ``batch`` for the session's inputs (a missing attention_mask is all ones; the pasts of a
    KV-cache graph are empty)."""
    names = [node.name for node in session.get_inputs()]
    feed = empty_past_feed(session, len(batch["input_ids"]))  # a KV-cache graph: its prefill, with no past
    for name in names:
        if name.startswith(PAST_PREFIX):
            continue
        value = batch.get(name)
        if value is None and name == "attention_mask":
            value = torch.ones_like(batch["input_ids"])
        if value is None:
            raise ValueError(f"the batch has no {name!r}, an input of the ONNX model; got keys {sorted(batch)}")
        feed[name] = value.long().cpu().numpy()
    return feed


def session_outputs(session, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.from_numpy(session.run(None, session_feed(session, batch))[0]).float()


# ---------------------------------------------------------------------- post-training int8 (ONNX Runtime's own)
def _calibration_feeds(batches: Iterable, input_names: list[str]) -> list[dict]:
    feeds = []
    for index, batch in enumerate(batches):
        if torch.is_tensor(batch):
            batch = {"input_ids": batch}
        if not isinstance(batch, dict) and hasattr(batch, "keys"):  # a tokenizer's BatchEncoding
            batch = dict(batch)
        if not isinstance(batch, dict) or "input_ids" not in batch:
            raise ValueError(
                f"calibration_batches[{index}] must be a dict with input_ids (e.g. a tokenizer's output with "
                f"return_tensors='pt') or an input_ids tensor; got {type(batch).__name__}"
            )
        tensors = {key: torch.as_tensor(value) for key, value in batch.items() if key in INPUT_NAMES}
        if "attention_mask" not in tensors:
            tensors["attention_mask"] = torch.ones_like(tensors["input_ids"])
        feeds.append({name: tensors[name].long().numpy() for name in input_names if name in tensors})
    if not feeds:
        raise ValueError("calibration_batches is empty; pass at least one batch")
    return feeds


class _QuietOrtQuantization(logging.Filter):
    """onnxruntime.quantization logs per-tensor chatter on the root logger at INFO; keep its warnings only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "onnxruntime" not in record.pathname


def cpu_lacks_vnni() -> bool:
    """True on an x86 Linux CPU whose flags lack VNNI (AVX2 only): ORT's u8 x s8 kernels can saturate there."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64") or not os.path.exists("/proc/cpuinfo"):
        return False
    with open("/proc/cpuinfo") as handle:
        flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    return not {"avx512_vnni", "avx_vnni"} & set(flags)


def ort_post_training_int8(
    float_file: str,
    int8_file: str,
    mode: str,
    calibration_batches,
    batch: dict,
    reference: torch.Tensor,
    external: bool = False,
) -> list[str]:
    """ONNX Runtime's own int8 quantization of ``float_file`` (MatMul/Gemm, int8 per-channel weights); its notes.

    On x86 CPUs without VNNI, ORT adds pairs of u8 x s8 products in int16 (VPMADDUBSW), which full-range weights can
    saturate: there 7-bit weights (ORT's ``reduce_range``) are made too, and the export whose outputs on ``batch``
    are closer to ``reference`` is kept. Where VNNI is present, 8-bit weights. With ``external``, the weights go to
    ``<int8_file>.data`` beside the graph.
    """
    quiet = _QuietOrtQuantization()
    logging.getLogger().addFilter(quiet)
    try:
        names = list(batch)
        notes = [_ort_quantize(float_file, int8_file, mode, calibration_batches, names, False, external)]
        if not cpu_lacks_vnni():
            return notes
        narrow_file = int8_file + ".7bit"
        narrow_note = _ort_quantize(float_file, narrow_file, mode, calibration_batches, names, True, external)
    finally:
        logging.getLogger().removeFilter(quiet)
    full_diff, narrow_diff = (
        (session_outputs(inference_session(path), batch) - reference).abs().max().item()
        for path in (int8_file, narrow_file)
    )
    if narrow_diff < full_diff:  # the kept graph names its own data file: only the other one goes
        os.replace(narrow_file, int8_file)
        notes = [narrow_note]
        _remove_if_present(int8_file + ".data")
    else:
        os.remove(narrow_file)
        _remove_if_present(narrow_file + ".data")
    message = (
        f"this CPU has no VNNI: max abs diff {full_diff:.3g} with 8-bit weights, {narrow_diff:.3g} with 7-bit "
        f"(reduce_range); kept {'7' if narrow_diff < full_diff else '8'}-bit weights"
    )
    logger.info("hf_compress export: %s", message)
    return notes + [message]


def _remove_if_present(file: str) -> None:
    if os.path.exists(file):
        os.remove(file)


def _ort_quantize(float_file, int8_file, mode, calibration_batches, input_names, reduce_range, external) -> str:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    if mode == "dynamic":
        quantize_dynamic(
            float_file,
            int8_file,
            per_channel=True,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gemm"],
            use_external_data_format=external,
        )
        return (
            "post-training int8 by onnxruntime.quantization.quantize_dynamic (per-channel int8 weights"
            f"{' in 7 bits' if reduce_range else ''}, dynamic activations)"
        )
    feeds = _calibration_feeds(calibration_batches, input_names)
    for feed in feeds:  # a KV-cache graph calibrates on its prefill, with no past
        feed.update(empty_past_for_graph(float_file, len(feed["input_ids"])))

    class BatchReader(CalibrationDataReader):
        def __init__(self) -> None:
            self.remaining = iter(feeds)

        def get_next(self):
            return next(self.remaining, None)

    quantize_static(
        float_file,
        int8_file,
        BatchReader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=reduce_range,
        activation_type=QuantType.QUInt8,  # u8 x s8: ORT's fast x86 kernels (s8 x s8 QDQ ran 2.5x slower on MiniLM)
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gemm"],
        calibrate_method=CalibrationMethod.MinMax,
        use_external_data_format=external,
    )
    return (
        f"post-training int8 by onnxruntime.quantization.quantize_static on {len(feeds)} calibration batches "
        f"(QDQ, per-channel int8 weights{' in 7 bits' if reduce_range else ''}, per-tensor uint8 activations by "
        "min/max)"
    )


def count_int8_matmuls(model) -> int:
    """MatMul/Gemm nodes that run on int8 in ``model`` (an ``onnx.ModelProto``)."""
    initializer_types = {tensor.name: tensor.data_type for tensor in model.graph.initializer}
    int8_types = {2, 3}  # onnx.TensorProto.UINT8, INT8
    count = sum(1 for node in model.graph.node if node.op_type in ("MatMulInteger", "QLinearMatMul"))
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and initializer_types.get(node.input[0]) in int8_types:
            count += 1
    return count
