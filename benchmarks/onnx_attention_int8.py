"""ORT dynamic int8 with the attention MatMuls quantized too, against hf-compress's choice (weight MatMuls only).

``quantize_dynamic`` quantizes only MatMuls with a constant weight by default (``MatMulConstBOnly``); with
``MatMulConstBOnly=False`` the two attention products (Q x K^T and probabilities x V) get ``DynamicQuantizeLinear`` on
both inputs and run as ``MatMulInteger``. The same eager-traced graph is quantized both ways and timed against PyTorch
fp32 (SDPA), interleaved, in hf-compress's session. Models as in ``onnx_attention_trace.py``.

    python benchmarks/onnx_attention_int8.py --output benchmarks/results/onnx_attention_int8.md
"""

from __future__ import annotations

import os
import sys

import onnx
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from onnx_attention_trace import dynamic_int8, run, timing_table  # noqa: E402

from hf_compress.quantization.export_onnx_runtime import inference_session  # noqa: E402
from hf_compress.quantization.export_onnx_trace import onnx_inputs, trace_to_onnx  # noqa: E402

COMMAND = "python benchmarks/onnx_attention_int8.py --output benchmarks/results/onnx_attention_int8.md"
VARIANTS = {"weights only (hf-compress)": {}, "attention too": {"MatMulConstBOnly": False}}


def measure(name: str, model, work: str, rounds: dict[int, int]) -> list[str]:
    model.eval()
    inputs = onnx_inputs(model, {"input_ids": torch.randint(0, model.config.vocab_size, (2, 16))})
    float_file = os.path.join(work, "float.onnx")
    trace_to_onnx(model, inputs, float_file, "torchscript", 17)
    graphs, counts = {}, []
    for index, (variant, extra) in enumerate(VARIANTS.items()):
        int8_file = os.path.join(work, f"int8-{index}.onnx")
        dynamic_int8(float_file, int8_file, extra)
        nodes = [node.op_type for node in onnx.load(int8_file).graph.node]
        counts.append(f"{variant}: {nodes.count('MatMulInteger')} MatMulInteger, {nodes.count('MatMul')} float MatMul")
        graphs[f"ORT int8 dynamic, {variant}"] = int8_file
    lines = [f"## {name}", "", "Graph nodes: " + "; ".join(counts) + ".", ""]
    first, second = graphs
    lines += timing_table(
        model,
        lambda threads: {label: inference_session(file, threads) for label, file in graphs.items()},
        rounds,
        "attention too / weights only (speed)",
        lambda medians: medians[first] / medians[second],
    )
    return lines + [""]


def main() -> None:
    run(
        measure,
        os.path.join(HERE, "results", "onnx_attention_int8.md"),
        "ONNX Runtime dynamic int8: quantizing the attention MatMuls too",
        "One eager-traced graph per model, quantized by `onnxruntime.quantization.quantize_dynamic` (per-channel int8 "
        "weights) with ORT's default `MatMulConstBOnly` (weight MatMuls only: what `export(format='onnx-int8', "
        "int8_mode='dynamic')` does) and with `MatMulConstBOnly=False` (the attention products too). Ratios in "
        "brackets are over PyTorch fp32 (SDPA, `torch.inference_mode`), timed interleaved (median of rounds) in "
        "hf-compress's session (`SkipLayerNormFusion` off, no spinning). The last ratio above 1 means quantizing "
        "attention is faster.",
        COMMAND,
    )


if __name__ == "__main__":
    main()
