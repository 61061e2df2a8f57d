"""The options :func:`hf_compress.export` takes and what it returns: :class:`ExportOptions`, :class:`ExportResult` and
:class:`ExportVerificationError` (the check of the reloaded export failed).

Shared by the export driver (:mod:`hf_compress.quantization.export`) and the whole-model formats
(:mod:`hf_compress.quantization.export_onnx`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from hf_compress.config_base import CompressionConfig, check_choice, check_number
from hf_compress.quantization.grid import GRANULARITIES, MAX_BITS, MIN_BITS, SCALE_METHODS, QuantSpec

__all__ = ["ExportOptions", "ExportResult", "ExportVerificationError"]


class ExportVerificationError(RuntimeError):
    """The reloaded export does not reproduce the model in memory (the files are left in place to inspect)."""


@dataclass
class ExportOptions(CompressionConfig):
    """Options of :func:`~hf_compress.export` (passed as keyword arguments).

    Args:
        bits, symmetric, granularity, group_size (*optional*): the grid of post-training quantization, for a model
            that was never QAT-prepared (defaults: 8 bits, symmetric, per_channel). An error for a QAT model.
        scale_method (`str`, defaults to `"minmax"`): ``"minmax"`` or ``"mse"``, for post-training quantization.
        targets, exclude (`list[str]`, *optional*): module regexes for post-training quantization.
        allow_ptq (`bool`, defaults to `True`): False makes a model that was never QAT-prepared an error.
        allow_regrid (`bool`, defaults to `False`): let a format that cannot hold the grid exactly (quanto with
            some per-group grids) re-quantize those layers onto its own grid; the difference is reported and the
            check compares against the re-quantized weights.
        tolerance (`float`, defaults to 1e-3): largest max abs difference of the outputs allowed by the check.
        sample_inputs (*optional*): the batch to check on (a dict of tensors or an ``input_ids`` tensor); default:
            2 x 16 token ids drawn with a fixed seed.
        overwrite (`bool`, defaults to `False`): replace a non-empty output folder.
        speed_repeats (`int`, defaults to 10): timed runs per model for the speed report (0: no latency measured).
        print_report (`bool`, defaults to `True`): print the speed report (it is always written beside the model).
        exporter (`str`, defaults to `"torchscript"`): ONNX formats: torch's ``"torchscript"`` or ``"dynamo"``
            exporter.
        opset (`int`, defaults to 17): ONNX formats: the opset version.
        int8_mode (`str`, defaults to `"static"`): ``onnx-int8`` for a model never QAT-trained: ONNX Runtime's
            ``"static"`` quantization (needs ``calibration_batches``) or ``"dynamic"``.
        calibration_batches (*optional*): ``onnx-int8`` static: batches (dicts with ``input_ids`` and
            ``attention_mask``, or ``input_ids`` tensors) to calibrate the activation ranges on.
        min_top1_agreement (`float`, defaults to 0.9): ``onnx-int8``: smallest fraction of positions whose argmax
            matches the PyTorch model, for the check.
        kv_cache (`bool`, defaults to `False`): ONNX formats, decoder-only causal LMs: export one decoding step with
            the KV cache as inputs (``past_key_values.{i}.key/value``) and outputs (``present.{i}.key/value``), for
            :func:`~hf_compress.onnx_generate`. An error for other formats and for encoders.
        external_data (`bool`, *optional*): ONNX formats: write the weights to ``model.onnx.data`` beside
            ``model.onnx`` (ONNX external data; keep the two files together). Default: only when the float32 weights
            pass 1.8 GB, as protobuf cannot hold a graph over 2 GB in one file.
    """

    bits: int | None = None
    symmetric: bool | None = None
    granularity: str | None = None
    group_size: int | None = None
    scale_method: str = "minmax"
    targets: list[str] | None = None
    exclude: list[str] | None = None
    allow_ptq: bool = True
    allow_regrid: bool = False
    tolerance: float = 1e-3
    sample_inputs: Any = None
    overwrite: bool = False
    speed_repeats: int = 10
    print_report: bool = True
    exporter: str = "torchscript"
    opset: int = 17
    int8_mode: str = "static"
    calibration_batches: Any = None
    min_top1_agreement: float = 0.9
    kv_cache: bool = False
    external_data: bool | None = None

    def __post_init__(self) -> None:
        if self.bits is not None:
            check_number("bits", self.bits, low=MIN_BITS, high=MAX_BITS, integer=True)
        bools = ("symmetric", "allow_ptq", "allow_regrid", "overwrite", "print_report", "kv_cache", "external_data")
        for name in bools:
            value = getattr(self, name)
            if not isinstance(value, bool) and not (name in ("symmetric", "external_data") and value is None):
                raise ValueError(f"{name} must be True or False; got {value!r}")
        if self.granularity is not None:
            self.granularity = check_choice("granularity", self.granularity, GRANULARITIES)
        if self.group_size is not None:
            check_number("group_size", self.group_size, low=1, integer=True)
        self.scale_method = check_choice("scale_method", self.scale_method, SCALE_METHODS)
        check_number("tolerance", self.tolerance, low=0.0, low_inclusive=False)
        check_number("speed_repeats", self.speed_repeats, low=0, integer=True)
        check_number("opset", self.opset, low=13, high=23, integer=True)
        check_number("min_top1_agreement", self.min_top1_agreement, low=0.0, high=1.0)
        self.exporter = check_choice("exporter", self.exporter, ("torchscript", "dynamo"))
        self.int8_mode = check_choice("int8_mode", self.int8_mode, ("static", "dynamic"))
        if isinstance(self.calibration_batches, (str, bytes, dict)) or torch.is_tensor(self.calibration_batches):
            raise ValueError(
                "calibration_batches must be a list (or iterable) of batches, each a dict with input_ids and "
                f"attention_mask or an input_ids tensor; got a single {type(self.calibration_batches).__name__}"
            )
        for name in ("targets", "exclude"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, [value])
            elif value is not None and not (
                isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
            ):
                raise ValueError(f"{name} must be a list of regex strings or None; got {value!r}")
        self.ptq_spec()  # validates the combination (group_size needs per_group)

    def ptq_spec(self) -> QuantSpec | None:
        """The post-training grid the user asked for, or None when no grid option was given."""
        if self.bits is None and self.symmetric is None and self.granularity is None and self.group_size is None:
            return None
        granularity = self.granularity or ("per_group" if self.group_size is not None else "per_channel")
        symmetric = True if self.symmetric is None else self.symmetric
        return QuantSpec(self.bits or 8, symmetric, granularity, self.group_size)


@dataclass
class ExportResult:
    """What :func:`~hf_compress.export` wrote and how the reloaded export compared with the model in memory.

    Attributes:
        format, path: the format and folder written.
        method: where the grid came from: ``"qat"``, ``"config"`` (recovered from a saved QAT model) or ``"ptq"``.
        layers: how many modules are quantized.
        max_abs_diff: max |reloaded export - model in memory| of the outputs on the fixed batch; for
            post-training quantization, against the quantized copy of the model.
        float_max_abs_diff: post-training quantization only: against the float model in memory (the quantization
            error).
        checked_max_abs_diff, checked_against: the difference held against ``tolerance``, and against what: the
            model in memory, or its weights without activation quantization (a format that cannot hold it), or
            the re-quantized weights (``allow_regrid``).
        activation_params_max_abs_diff: with activation quantization kept, max |reloaded - QAT| of the static
            activation scales and zero points (0.0 when every layer is dynamic per-token).
        weight_max_abs_diff: max |reloaded weight - grid value| over the quantized layers.
        exact_grid: True when every layer was written on its own (QAT) grid.
        activation_quantization: ``"none"``, ``"kept"`` or ``"dropped"``.
        sparsity, zeros_kept: fraction of exactly-zero quantized weights after reload, and whether every weight
            that was zero in the model is still zero.
        size_bytes, files: what is on disk.
        notes: everything worth knowing (post-training quantization, dropped activation quantization, ...).
        top1_agreement: ONNX formats: fraction of positions whose argmax matches the PyTorch model.
        speed: the speed report (:class:`~hf_compress.quantization.export_speed_report.SpeedReport` as a dict).
    """

    format: str
    path: str
    method: str
    layers: int
    max_abs_diff: float
    float_max_abs_diff: float | None
    checked_max_abs_diff: float
    checked_against: str
    activation_params_max_abs_diff: float | None
    tolerance: float
    weight_max_abs_diff: float
    exact_grid: bool
    activation_quantization: str
    sparsity: float
    zeros_kept: bool
    size_bytes: int
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    top1_agreement: float | None = None
    speed: dict | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
