"""The speed report every export prints and writes beside the model (``speed_report.md`` / ``speed_report.json``).

It says what the user bought: the size on disk against float32, the measured latency of the exported model in the
runtime it is meant for against the PyTorch float32 model (when that runtime is installed here), and which of the
model's compression that runtime turns into speed. The facts per runtime (2026):

- structured shrinking (fewer heads / neurons / layers): every runtime, it is a smaller dense model;
- int8 weights and activations: ONNX Runtime on CPU (``onnx-int8``), vLLM W8A8 (``compressed-tensors`` with int8
  activations) on GPU;
- int4 weight-only: vLLM W4A16 (``compressed-tensors`` ``pack-quantized``) on GPU;
- unstructured sparsity: no runtime on CPU or in vLLM skips zeros;
- 2:4 sparsity: vLLM removed its 2:4 kernels in 2026 (vllm #36799); no CPU runtime uses it.

A model with sparsity but neither quantization that its runtime executes nor shrinking gets a warning.

Example:

```python
>>> import torch
>>> from hf_compress.quantization.export_speed_report import median_latencies
>>> times = median_latencies({"a": lambda: torch.ones(4).sum(), "b": lambda: torch.ones(8).sum()}, repeats=3)
>>> sorted(times)
['a', 'b']
```
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from hf_compress.targets import find_target_modules, weight_out_in

logger = logging.getLogger(__name__)

REPORT_MARKDOWN = "speed_report.md"
REPORT_JSON = "speed_report.json"
WARMUP_RUNS = 2
# Fraction of exact zeros in the Linear weights above which a model counts as sparse.
SPARSE_FRACTION = 0.05

# What each runtime turns into speed; the keys are the compression kinds the report detects.
RUNTIME_SPEEDUPS = {
    "structured shrinking": "every runtime (a smaller dense model)",
    "int8 weights + activations": "ONNX Runtime CPU (format='onnx-int8'); vLLM W8A8 on GPU (format='compressed-tensors')",
    "int4 weight-only": "vLLM W4A16 on GPU (format='compressed-tensors', pack-quantized); not ONNX Runtime CPU",
    "weight-only int8": "vLLM on GPU (memory-bound decoding); no CPU runtime runs it faster than float",
    "unstructured sparsity": "none: no CPU runtime and no vLLM kernel skips zeros (smaller only if compressed)",
    "2:4 sparsity": "none: vLLM removed its 2:4 kernels in 2026 (vllm #36799); no CPU runtime uses 2:4",
    "structured zeros (not removed)": "none until the zeros are removed: shrink the model physically first",
}

# What the target runtime of each export format runs faster, by compression kind.
FORMAT_RUNTIMES = {
    "dequantized": ("PyTorch (transformers)", set()),
    "quanto": ("PyTorch (optimum-quanto)", set()),
    "compressed-tensors": ("vLLM", {"int8 weights + activations", "int4 weight-only", "weight-only int8"}),
    "onnx": ("ONNX Runtime (CPU)", set()),
    "onnx-int8": ("ONNX Runtime (CPU)", {"int8 weights + activations"}),
}


@dataclass
class SpeedReport:
    """What :func:`build_report` measured and concluded (``ExportResult.speed`` holds it as a dict)."""

    format: str
    runtime: str
    size_bytes: int
    float32_size_bytes: int
    latency_ms: float | None
    pytorch_fp32_latency_ms: float | None
    speedup: float | None
    batch_shape: list[int]
    threads: int
    measured: str
    compression: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # a KV-cache export: one generated token's step, against PyTorch's step with its own cache
    decode_step_ms: float | None = None
    pytorch_fp32_decode_step_ms: float | None = None
    decode_speedup: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def markdown(self) -> str:
        lines = [
            f"# Speed report: {self.format} ({self.runtime})",
            "",
            f"- size: {self.size_bytes / 1e6:.2f} MB, {self.size_bytes / max(self.float32_size_bytes, 1):.2f}x "
            f"the float32 model ({self.float32_size_bytes / 1e6:.2f} MB)",
        ]
        if self.speedup is not None:
            lines.append(
                f"- latency, batch {'x'.join(map(str, self.batch_shape))}, {self.threads} thread(s): "
                f"{self.latency_ms:.2f} ms in {self.runtime} vs {self.pytorch_fp32_latency_ms:.2f} ms PyTorch fp32 "
                f"= {self.speedup:.2f}x"
            )
        else:
            lines.append(f"- latency: {self.measured}")
        if self.decode_speedup is not None:
            lines.append(
                f"- one generated token with the KV cache, past {self.batch_shape[-1]}: {self.decode_step_ms:.2f} ms in "
                f"{self.runtime} vs {self.pytorch_fp32_decode_step_ms:.2f} ms PyTorch fp32 = {self.decode_speedup:.2f}x"
            )
        lines.append("- compression, and what turns it into speed:")
        if not self.compression:
            lines.append("  - none detected (a dense float model)")
        for item in self.compression:
            here = "yes" if item["faster_in_target_runtime"] else "no"
            lines.append(
                f"  - {item['kind']} ({item['detail']}): faster in {self.runtime}: {here}; {item['runtimes']}"
            )
        lines += [f"- WARNING: {warning}" for warning in self.warnings]
        return "\n".join(lines) + "\n"


def median_latencies(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each callable, run interleaved (a, b, a, b, ...) after :data:`WARMUP_RUNS` warm-up rounds.

    Interleaving makes the ratio fair on a shared, noisy machine.
    """
    timings: dict[str, list[float]] = {name: [] for name in runs}
    for round_index in range(WARMUP_RUNS + repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            if round_index >= WARMUP_RUNS:
                timings[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in timings.items()}


def torch_runner(model: nn.Module, batch: dict[str, torch.Tensor]) -> Callable[[], object]:
    """A callable that runs ``model`` (eval mode, no grad) on ``batch``."""
    model.eval()

    def run():
        with torch.no_grad():  # not inference_mode: optimum-quanto's GPT-2 weights refuse inference tensors
            return model(**batch)

    return run


@torch.no_grad()
def detect_compression(model: nn.Module, quantization: dict | None) -> list[tuple[str, str]]:
    """The compression kinds in ``model`` as ``(kind, detail)``; ``quantization`` is what the export wrote
    (``{"bits", "activations", "granularity"}``) or None for a float export."""
    found = []
    config = getattr(model, "config", None)
    shrunk = getattr(config, "hf_compress_shrink", None) or getattr(config, "hf_compress_structured", None)
    if shrunk:
        found.append(("structured shrinking", "recorded in the model config"))
    zeros = total = zero_rows = rows = 0
    two_four = True
    for module in find_target_modules(model).values():
        weight = weight_out_in(module.weight.detach(), module)
        is_zero = weight == 0
        zeros += int(is_zero.sum())
        total += is_zero.numel()
        zero_rows += int(is_zero.all(dim=1).sum())
        rows += is_zero.shape[0]
        two_four = two_four and weight.shape[1] % 4 == 0 and bool((is_zero.reshape(-1, 4).sum(1) >= 2).all())
    sparsity = zeros / max(total, 1)
    if quantization:
        bits, activations = quantization.get("bits"), quantization.get("activations")
        if bits == 8 and activations:
            found.append(("int8 weights + activations", f"{activations} int8 activations"))
        elif bits == 8:
            found.append(("weight-only int8", quantization.get("granularity") or "int8 weights"))
        elif bits is not None:
            found.append(("int4 weight-only" if bits == 4 else f"int{bits} weight-only", f"{bits}-bit weights"))
    if sparsity >= SPARSE_FRACTION:
        if zero_rows / max(rows, 1) >= SPARSE_FRACTION:
            found.append(("structured zeros (not removed)", f"{zero_rows} of {rows} output rows are all zero"))
        if two_four:
            found.append(("2:4 sparsity", f"{sparsity:.1%} zeros"))
        else:
            found.append(("unstructured sparsity", f"{sparsity:.1%} zeros"))
    return found


def build_report(
    format_name: str,
    detected: list[tuple[str, str]],
    size_bytes: int,
    float32_size_bytes: int,
    timings: dict[str, float] | None,
    batch_shape: list[int],
    measured: str,
) -> SpeedReport:
    """Assemble the report from :func:`detect_compression`'s ``detected`` kinds; ``timings`` holds
    ``{"exported", "pytorch_fp32"}`` median seconds (and ``"exported_decode_step", "pytorch_fp32_decode_step"`` for a
    KV-cache export), or is None."""
    runtime, fast = FORMAT_RUNTIMES.get(format_name, (format_name, set()))
    compression = []
    kinds = set()
    for kind, detail in detected:
        kinds.add(kind)
        faster = kind in fast or kind == "structured shrinking"
        compression.append(
            {"kind": kind, "detail": detail, "faster_in_target_runtime": faster, "runtimes": RUNTIME_SPEEDUPS[kind]}
        )
    warnings = []
    sparse = kinds & {"unstructured sparsity", "2:4 sparsity", "structured zeros (not removed)"}
    if sparse and not (kinds & fast) and "structured shrinking" not in kinds:
        warnings.append(
            f"this export has {', '.join(sorted(sparse))} but no quantization that {runtime} executes and no "
            "structured shrinking: it will not run faster than the dense model. No CPU runtime or vLLM kernel skips "
            "zeros (vLLM removed 2:4 in 2026). For speed, shrink the model physically or export int8 to a runtime "
            "that runs it (format='onnx-int8' on CPU)"
        )
    latency = reference = speedup = step = reference_step = step_speedup = None
    if timings is not None:
        latency, reference = timings["exported"] * 1e3, timings["pytorch_fp32"] * 1e3
        speedup = reference / latency
        if "exported_decode_step" in timings:
            step, reference_step = timings["exported_decode_step"] * 1e3, timings["pytorch_fp32_decode_step"] * 1e3
            step_speedup = reference_step / step
    return SpeedReport(
        format=format_name,
        runtime=runtime,
        size_bytes=size_bytes,
        float32_size_bytes=float32_size_bytes,
        latency_ms=latency,
        pytorch_fp32_latency_ms=reference,
        speedup=speedup,
        batch_shape=batch_shape,
        threads=torch.get_num_threads(),
        measured=measured,
        compression=compression,
        warnings=warnings,
        decode_step_ms=step,
        pytorch_fp32_decode_step_ms=reference_step,
        decode_speedup=step_speedup,
    )


def write_report(report: SpeedReport, folder: str, print_report: bool = True) -> None:
    """Print the report, log its warnings, and write it as Markdown and JSON into ``folder``."""
    text = report.markdown()
    if print_report:
        print(text, end="")
    for warning in report.warnings:
        logger.warning("hf_compress export: %s", warning)
    with open(os.path.join(folder, REPORT_MARKDOWN), "w") as handle:
        handle.write(text)
    with open(os.path.join(folder, REPORT_JSON), "w") as handle:
        json.dump(report.to_dict(), handle, indent=2)


def float32_size(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers in float32 (shared tensors counted once)."""
    seen, total = set(), 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        total += tensor.numel() * (4 if tensor.is_floating_point() else tensor.element_size())
    return total


def runtime_installed(format_name: str) -> bool:
    """Whether the target runtime of ``format_name`` can run here (vLLM is GPU-only and usually absent on CPU)."""
    if format_name == "compressed-tensors":
        return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()
    return True
