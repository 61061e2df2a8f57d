"""ONNX Runtime session settings for hf-compress's exports: ORT's defaults against ``hf_compress.onnx_session``.

``onnx_session`` (and the export check and speed report, which use it) turns off ORT's ``SkipLayerNormFusion``
and thread spinning. This script measures the fusion's part: the same exported graphs (eager-attention trace,
float32 and ORT dynamic int8) in a session with ORT's default graph optimisations and in one with the fusion off,
both without spinning, against PyTorch fp32 (SDPA), interleaved in one process. Models as in
``onnx_attention_trace.py`` (real MiniLM; random-weight Llama teacher and GPT-2 shapes: speed only).

    python benchmarks/onnx_session_options.py --output benchmarks/results/onnx_session.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import numpy as np
import onnxruntime
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from onnx_attention_trace import MODELS, dynamic_int8  # noqa: E402
from onnx_speed import cpu_name, load_average, time_cell  # noqa: E402

from hf_compress.quantization.export_onnx_runtime import SLOW_FUSIONS, inference_session  # noqa: E402
from hf_compress.quantization.export_onnx_trace import onnx_inputs, trace_to_onnx  # noqa: E402

SEQUENCE = 128
COMMAND = "python benchmarks/onnx_session_options.py --output benchmarks/results/onnx_session.md"


def default_session(file: str, threads: int):
    """ORT's default graph optimisations (all fusions on), spinning off as in ``inference_session``."""
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(file, options, providers=["CPUExecutionProvider"])


def measure(name: str, model, work: str, rounds: dict[int, int]) -> list[str]:
    model.eval()
    vocab = model.config.vocab_size
    inputs = onnx_inputs(model, {"input_ids": torch.randint(0, vocab, (2, 16))})
    float_file, int8_file = os.path.join(work, "float.onnx"), os.path.join(work, "int8.onnx")
    trace_to_onnx(model, inputs, float_file, "torchscript", 17)
    dynamic_int8(float_file, int8_file)
    cells = {
        "ORT fp32, default": (float_file, default_session),
        "ORT fp32, fusion off": (float_file, inference_session),
        "ORT int8 dynamic, default": (int8_file, default_session),
        "ORT int8 dynamic, fusion off": (int8_file, inference_session),
    }
    lines = [
        f"## {name}",
        "",
        "| threads | batch x seq | PyTorch fp32 (ms) | " + " | ".join(f"{c} (ms)" for c in cells),
    ]
    lines[-1] += " | int8: off / default | load avg |"
    lines.append("|---|---|---:|" + "---:|" * len(cells) + "---:|---|")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        sessions = {label: make(file, threads) for label, (file, make) in cells.items()}
        for batch_size in (1, 16):
            generator = torch.Generator().manual_seed(batch_size)
            ids = torch.randint(0, vocab, (batch_size, SEQUENCE), generator=generator)
            batch = onnx_inputs(model, {"input_ids": ids})
            with torch.inference_mode():
                reference = model(**batch).logits.numpy()

            def torch_run(batch=batch):
                with torch.inference_mode():
                    model(**batch)

            runners = {"PyTorch fp32": torch_run}
            for label, session in sessions.items():
                feed = {node.name: batch[node.name].numpy().astype(np.int64) for node in session.get_inputs()}
                difference = np.abs(session.run(None, feed)[0] - reference).max()
                assert difference < (1e-4 if "fp32" in label else 5.0), (label, difference)
                runners[label] = lambda session=session, feed=feed: session.run(None, feed)
            medians = time_cell(runners, rounds[batch_size])
            torch_ms = medians["PyTorch fp32"]
            row = [f"{torch_ms:.1f}"] + [f"{medians[c]:.1f} ({torch_ms / medians[c]:.2f}x)" for c in cells]
            gain = medians["ORT int8 dynamic, default"] / medians["ORT int8 dynamic, fusion off"]
            lines.append(
                f"| {threads} | {batch_size} x {SEQUENCE} | "
                + " | ".join(row)
                + f" | {gain:.2f}x | {load_average()} |"
            )
            print(lines[-1], flush=True)
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds-b1", type=int, default=15)
    parser.add_argument("--rounds-b16", type=int, default=5)
    parser.add_argument("--output", default=os.path.join(HERE, "results", "onnx_session.md"))
    options = parser.parse_args()
    start = time.time()
    sections = []
    with tempfile.TemporaryDirectory(prefix="onnx-session-") as work:
        for index, (name, build) in enumerate(MODELS.items()):
            folder = os.path.join(work, str(index))
            os.makedirs(folder)
            sections += measure(name, build(), folder, {1: options.rounds_b1, 16: options.rounds_b16})
    header = [
        "# ONNX Runtime sessions: ORT's default fusions against hf-compress's (`SkipLayerNormFusion` off)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} with `{COMMAND}` on {platform.machine()} ({os.cpu_count()} CPUs, "
        f"shared; load average when written {load_average()}), torch {torch.__version__}, onnxruntime "
        f"{onnxruntime.__version__}; {time.time() - start:.0f} s. CPU: {cpu_name()}.",
        f"The same graphs in two CPU sessions, both at `ORT_ENABLE_ALL` without thread spinning: ORT's default "
        f"fusions, and with {', '.join(SLOW_FUSIONS)} disabled (`hf_compress.onnx_session`). Ratios in brackets are "
        "over PyTorch fp32 (SDPA, `torch.inference_mode`), timed interleaved (median of rounds).",
        "",
    ]
    with open(options.output, "w") as handle:
        handle.write("\n".join(header + sections))
    print(f"wrote {options.output}")


if __name__ == "__main__":
    main()
