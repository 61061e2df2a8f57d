"""Export formats side by side: size on disk, CPU latency of the reloaded model, and max abs difference.

A byte-level Llama (vocab 256, ~6.4M parameters) is built from its config with a fixed seed; it is not trained
(size and latency do not depend on the weight values). It is quantized post-training (round to nearest, min/max
scales) at int8 per-channel and int4 per-group(128) and written with :func:`hf_compress.export` in every format; the
float checkpoint is written with ``save_pretrained``. Each checkpoint is reloaded the way a user would:

- float / ``dequantized``: ``LlamaForCausalLM.from_pretrained``;
- ``quanto``: ``optimum.quanto.QuantizedModelForCausalLM.from_pretrained``;
- ``compressed-tensors``: ``AutoModelForCausalLM.from_pretrained`` (transformers' compressed-tensors integration,
  which decompresses the weights to float on the first forward on CPU; vLLM runs the int kernels on GPU).

Latency: forward passes on one fixed batch, all models interleaved round by round (median of ``--repeats``), after a
warm-up pass each. Max abs diff: logits of the reloaded export against the post-training-quantized model in memory
(what the export must reproduce) and against the float model (the quantization error).

    python benchmarks/export_formats.py                 # ~3 min on 2 CPU cores
    python benchmarks/export_formats.py --repeats 100 --threads 2
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from hf_compress import export

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "export.md")
GRIDS = {
    "int8 per-channel": {"bits": 8},
    "int4 per-group(128)": {"bits": 4, "granularity": "per_group", "group_size": 128},
}
FORMATS = ("dequantized", "quanto", "compressed-tensors")


def build_model(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def folder_size(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder))


def load(folder: str, export_format: str):
    if export_format == "quanto":
        from optimum.quanto import QuantizedModelForCausalLM

        return QuantizedModelForCausalLM.from_pretrained(folder)._wrapped
    if export_format == "compressed-tensors":
        return AutoModelForCausalLM.from_pretrained(folder).eval()
    return LlamaForCausalLM.from_pretrained(folder).eval()


@torch.no_grad()
def logits(model, batch) -> torch.Tensor:
    return model(input_ids=batch).logits.float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=50, help="timed forward passes per model")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--length", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    command = "python " + " ".join(shlex.quote(arg) for arg in ["benchmarks/export_formats.py", *sys.argv[1:]])

    model = build_model()
    parameters = sum(p.numel() for p in model.parameters())
    batch = torch.randint(0, 256, (args.batch_size, args.length), generator=torch.Generator().manual_seed(0))
    float_logits = logits(model, batch)
    rows, models = [], {}
    with tempfile.TemporaryDirectory() as work:
        float_folder = os.path.join(work, "float")
        model.save_pretrained(float_folder)
        models["float"] = LlamaForCausalLM.from_pretrained(float_folder).eval()
        rows.append({"name": "float", "grid": "fp32", "format": "float checkpoint", "size": folder_size(float_folder)})
        for grid, options in GRIDS.items():
            for export_format in FORMATS:
                name = f"{export_format} / {grid}"
                folder = os.path.join(work, f"{export_format}-{options['bits']}")
                started = time.perf_counter()
                result = export(model, folder, format=export_format, **options)
                seconds = time.perf_counter() - started
                models[name] = load(folder, export_format)
                logits(models[name], batch[:1, :8])  # compressed-tensors decompresses on the first forward
                rows.append(
                    {
                        "name": name,
                        "grid": grid,
                        "format": export_format,
                        "size": result.size_bytes,
                        "export_seconds": seconds,
                        "diff_quantized": result.max_abs_diff,
                        "diff_float": (logits(models[name], batch) - float_logits).abs().max().item(),
                    }
                )

        timings = {name: [] for name in models}
        for current in models.values():  # warm-up
            logits(current, batch)
        for _ in range(args.repeats):  # interleaved: every model once per round
            for name, current in models.items():
                started = time.perf_counter()
                logits(current, batch)
                timings[name].append(time.perf_counter() - started)

    float_row = rows[0]
    float_latency = statistics.median(timings["float"])
    lines = [
        "# Export formats: size on disk and CPU latency",
        "",
        f"Measured {datetime.date.today().isoformat()} with `{command}` on {platform.processor() or platform.machine()}"
        f" ({os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} thread(s)).",
        "",
        f"Model: byte-level Llama built from its config (vocab 256, hidden 256, 8 layers, {parameters / 1e6:.1f}M "
        "parameters, seed 0), **not trained** (size and latency do not depend on the weight values). "
        "Quantized post-training (round to nearest, min/max scales) by `hf_compress.export`; every export was "
        "reloaded and checked by `export` itself and reloaded again here with the format's user-facing loader. "
        f"Latency: median of {args.repeats} forward passes on one {args.batch_size} x {args.length} batch, all "
        "models interleaved round by round, after a warm-up pass each.",
        "",
        "| format | weights | size on disk (MB) | size / float | CPU latency (ms) | latency / float | "
        "max abs diff vs quantized model | max abs diff vs float |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        latency = statistics.median(timings[row["name"]])
        diff_quantized = f"{row['diff_quantized']:.2g}" if "diff_quantized" in row else "-"
        diff_float = f"{row['diff_float']:.3g}" if "diff_float" in row else "-"
        lines.append(
            f"| {row['format']} | {row['grid']} | {row['size'] / 1e6:.2f} | {row['size'] / float_row['size']:.2f} | "
            f"{1e3 * latency:.1f} | {latency / float_latency:.2f} | {diff_quantized} | {diff_float} |"
        )
    lines += [
        "",
        "Notes:",
        "- Sizes are whole folders (weights, config, quanto's `quanto_qmap.json` and model card). The embedding and "
        "LM head stay in float in every format (they are not quantization targets), which bounds the size ratio "
        "on a model this small.",
        "- `compressed-tensors` on CPU: transformers decompresses the weights to float on the first forward and "
        "then runs float matmuls through compressed-tensors' quantized-forward wrapper; the int kernels are vLLM's "
        "(GPU), not measured here.",
        "- `quanto` keeps the weights quantized in memory and runs optimum-quanto's CPU matmuls on them; its "
        "latency against float is those kernels' cost on this CPU.",
        "- `dequantized` runs exactly the float model's computation, so its latency ratio shows the run-to-run "
        "noise of this shared 2-core machine.",
        "- No export reaches a CPU speed-up here: on CPU these formats save disk and memory, not time.",
    ]
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
