"""ONNX Runtime session settings for hf-compress's exports: ORT's defaults against ``hf_compress.onnx_session``.

``onnx_session`` turns off ORT's ``SkipLayerNormFusion`` and keeps its thread spinning; the export check and speed
report use the same session without spinning. This script measures both settings: the same exported graphs (eager-attention trace,
float32 and ORT dynamic int8) in a session with ORT's default graph optimisations and in one with the fusion off,
both without spinning, against PyTorch fp32 (SDPA), interleaved in one process; then int8 without and with
thread spinning, each runtime timed alone in alternating blocks. Models as in
``onnx_attention_trace.py`` (real MiniLM; random-weight Llama teacher and GPT-2 shapes: speed only).

    python benchmarks/onnx_session_options.py --output benchmarks/results/onnx_session.md
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from onnx_attention_trace import SEQUENCE, dynamic_int8, run, timing_table  # noqa: E402
from onnx_speed import load_average  # noqa: E402

from hf_compress.quantization.export_onnx_runtime import SLOW_FUSIONS, inference_session  # noqa: E402
from hf_compress.quantization.export_onnx_trace import onnx_inputs, trace_to_onnx  # noqa: E402

COMMAND = "python benchmarks/onnx_session_options.py --output benchmarks/results/onnx_session.md"


def default_session(file: str, threads: int):
    """ORT's default graph optimisations (all fusions on), spinning off as in ``inference_session``."""
    return inference_session(file, threads, disabled_fusions=())


def measure(name: str, model, work: str, rounds: dict[int, int]) -> list[str]:
    model.eval()
    inputs = onnx_inputs(model, {"input_ids": torch.randint(0, model.config.vocab_size, (2, 16))})
    float_file, int8_file = os.path.join(work, "float.onnx"), os.path.join(work, "int8.onnx")
    trace_to_onnx(model, inputs, float_file, "torchscript", 17)
    dynamic_int8(float_file, int8_file)
    cells = {
        "ORT fp32, default": (float_file, default_session),
        "ORT fp32, fusion off": (float_file, inference_session),
        "ORT int8 dynamic, default": (int8_file, default_session),
        "ORT int8 dynamic, fusion off": (int8_file, inference_session),
    }
    lines = [f"## {name}", ""]
    lines += timing_table(
        model,
        lambda threads: {label: make(file, threads) for label, (file, make) in cells.items()},
        rounds,
        "int8: off / default",
        lambda medians: medians["ORT int8 dynamic, default"] / medians["ORT int8 dynamic, fusion off"],
    )
    lines += ["", *spinning_table(model, int8_file, rounds)]
    return lines + [""]


def block_median(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def spinning_table(model, int8_file: str, rounds: dict[int, int], blocks: int = 2) -> list[str]:
    """Thread spinning, which interleaved timing cannot show: each runtime timed alone, in alternating blocks.

    Spinning ORT threads keep their cores busy after a run, so in turns with PyTorch they would slow PyTorch down;
    here PyTorch, ORT int8 without and with spinning each run a block of ``rounds`` calls on their own, and the
    blocks alternate ``blocks`` times (the median over all of a runtime's calls is reported).
    """
    vocab = model.config.vocab_size
    lines = ["Each runtime alone, in alternating blocks (thread spinning shows only there):", ""]
    lines.append(
        "| threads | batch x seq | PyTorch fp32 (ms) | ORT int8 dynamic, no spinning (ms) | ORT int8 dynamic, "
        "spinning (ms) | spinning / not | load avg |"
    )
    lines.append("|---|---|---:|---:|---:|---:|---|")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        sessions = {spin: inference_session(int8_file, threads, spin=spin) for spin in (False, True)}
        for batch_size in (1, 16):
            ids = torch.randint(0, vocab, (batch_size, SEQUENCE), generator=torch.Generator().manual_seed(batch_size))
            batch = onnx_inputs(model, {"input_ids": ids})
            medians = {"torch": [], False: [], True: []}

            def torch_run(batch=batch):
                with torch.inference_mode():
                    model(**batch)

            for _ in range(blocks):
                medians["torch"].append(block_median(torch_run, rounds[batch_size]))
                for spin, session in sessions.items():
                    feed = {node.name: batch[node.name].numpy().astype(np.int64) for node in session.get_inputs()}
                    run_once = lambda session=session, feed=feed: session.run(None, feed)  # noqa: E731
                    medians[spin].append(block_median(run_once, rounds[batch_size]))
            torch_ms, still_ms, spin_ms = (statistics.median(medians[key]) for key in ("torch", False, True))
            lines.append(
                f"| {threads} | {batch_size} x {SEQUENCE} | {torch_ms:.1f} | {still_ms:.1f} ({torch_ms / still_ms:.2f}x)"
                f" | {spin_ms:.1f} ({torch_ms / spin_ms:.2f}x) | {still_ms / spin_ms:.2f}x | {load_average()} |"
            )
            print(lines[-1], flush=True)
    return lines


def main() -> None:
    run(
        measure,
        os.path.join(HERE, "results", "onnx_session.md"),
        "ONNX Runtime sessions: ORT's default fusions against hf-compress's (`SkipLayerNormFusion` off)",
        "The same graphs in two CPU sessions, both at `ORT_ENABLE_ALL` without thread spinning: ORT's default "
        f"fusions, and with {', '.join(SLOW_FUSIONS)} disabled (`hf_compress.onnx_session`). Ratios in brackets are "
        "over PyTorch fp32 (SDPA, `torch.inference_mode`), timed interleaved (median of rounds).",
        COMMAND,
    )


if __name__ == "__main__":
    main()
