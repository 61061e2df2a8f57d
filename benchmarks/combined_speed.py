"""Structured shrinking and int8 together (issue 14's "combined" measurement): do the two speed-ups multiply?

    python benchmarks/combined_speed.py [--rounds 20]

The byte-level Llama shape of ``benchmarks/pipelines.py`` (4 layers, width 256, MLP 768, seq 128) and its shrunk
copy (``hf_compress.shrink_to``: half the KV groups, half the MLP neurons, hidden 192, magnitude importance). Speed
does not depend on the weights' values, so both models are random: this measures latency, not quality (quality of
shrunk students is in ``structured.md``, of int8 in ``onnx.md``). Interleaved in one run, one thread:
PyTorch fp32 dense, PyTorch fp32 shrunk, ONNX Runtime dynamic int8 dense and shrunk. Writes
``benchmarks/results/combined.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile

import torch
from transformers import LlamaForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from onnx_speed import load_average, time_cell  # noqa: E402
from structured_bench import SEQ_LEN, teacher_config  # noqa: E402

from hf_compress import StructuredPruningConfig, export  # noqa: E402
from hf_compress.quantization.export_onnx import inference_session  # noqa: E402
from hf_compress.structured.apply import shrink_to  # noqa: E402

RESULTS = os.path.join(HERE, "results", "combined.md")
SHAPE = {"num_key_value_heads": 2, "intermediate_size": 384, "hidden_size": 192}


def matmul_flops(model) -> int:
    """Multiply-adds of the Linear layers per token (what dominates these models' forward)."""
    return sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    options = parser.parse_args()
    torch.manual_seed(0)
    dense = LlamaForCausalLM(teacher_config()).eval()
    calibration = [{"input_ids": torch.randint(0, 256, (4, SEQ_LEN))} for _ in range(4)]
    shrunk = shrink_to(dense, StructuredPruningConfig(shape=SHAPE, criterion="magnitude"), calibration).eval()
    flops = matmul_flops(shrunk) / matmul_flops(dense)
    params = sum(p.numel() for p in shrunk.parameters()) / sum(p.numel() for p in dense.parameters())
    work = tempfile.mkdtemp(prefix="hf_compress_combined_")
    folders = {}
    for name, model in (("dense", dense), ("shrunk", shrunk)):
        folder = os.path.join(work, name)
        export(model, folder, format="onnx-int8", int8_mode="dynamic", print_report=False)
        folders[name] = os.path.join(folder, "model.onnx")
    torch.set_num_threads(1)
    sessions = {name: inference_session(path, 1) for name, path in folders.items()}
    rows = []
    for batch_size in (1, 16):
        ids = torch.randint(0, 256, (batch_size, SEQ_LEN))
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        feed = {key: value.numpy() for key, value in batch.items()}

        def torch_run(model, batch=batch):
            with torch.inference_mode():
                model(**batch)

        runners = {
            "PyTorch fp32 dense": lambda: torch_run(dense),
            "PyTorch fp32 shrunk": lambda: torch_run(shrunk),
        }
        for name, session in sessions.items():
            inputs = {node.name: feed[node.name] for node in session.get_inputs()}
            runners[f"ORT int8 {name}"] = lambda session=session, inputs=inputs: session.run(None, inputs)
        ms = time_cell(runners, options.rounds)
        rows.append((batch_size, ms, load_average()))
        print(batch_size, {k: round(v, 2) for k, v in ms.items()}, flush=True)

    base = "PyTorch fp32 dense"
    lines = [
        "# Structured shrinking x int8 (issue 14, combined)",
        "",
        f"{datetime.date.today()}, {platform.machine()} CPU, 1 thread, torch {torch.__version__}; "
        f"`python benchmarks/combined_speed.py --rounds {options.rounds}` (medians of interleaved rounds).",
        "",
        f"Shrunk shape {SHAPE}: {params:.2f}x the parameters, {flops:.2f}x the Linear multiply-adds per token. "
        "Random weights (speed only). Goal: >= 3x over PyTorch fp32 dense at about half the FLOPs.",
        "",
        "| batch x seq | PyTorch fp32 dense (ms) | PyTorch fp32 shrunk | ORT int8 dense | ORT int8 shrunk | "
        "shrunk / dense (PyTorch) | int8 / fp32 (dense) | shrunk int8 / dense fp32 | product of the two | load avg |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for batch_size, ms, load in rows:
        shrink_gain = ms[base] / ms["PyTorch fp32 shrunk"]
        int8_gain = ms[base] / ms["ORT int8 dense"]
        combined = ms[base] / ms["ORT int8 shrunk"]
        lines.append(
            f"| {batch_size} x {SEQ_LEN} | {ms[base]:.2f} | {ms['PyTorch fp32 shrunk']:.2f} | "
            f"{ms['ORT int8 dense']:.2f} | {ms['ORT int8 shrunk']:.2f} | {shrink_gain:.2f}x | {int8_gain:.2f}x | "
            f"**{combined:.2f}x** | {shrink_gain * int8_gain:.2f}x | {load} |"
        )
    with open(RESULTS, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
