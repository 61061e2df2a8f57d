"""GPU check: bf16 autocast with each callback on a bigger model, side by side in one run.

Run on a CUDA machine from the repository root (hf_compress need not be installed):

    PYTHONPATH=. python benchmarks/gpu_check.py --out results_dir

For each configuration a fresh copy of the same Llama-style model (about 200M parameters) trains a few steps with
``TrainingArguments(bf16=True)``; the script records the median step time (ratio to plain training), the final
loss (must be finite), the sparsity reached and the peak GPU memory. Results go to ``gpu_check.md`` / ``.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import time
import traceback

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times, self._start = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        sync()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        sync()
        self.times.append(time.perf_counter() - self._start)


class Tokens(torch.utils.data.Dataset):
    def __init__(self, vocab, length, count=512):
        generator = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, vocab, (count, length), generator=generator)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def configurations(teacher):
    from hf_compress import (
        DistillationCallback,
        DistillationConfig,
        PruningCallback,
        PruningConfig,
        QATCallback,
        QATConfig,
    )

    prune = dict(target_sparsity=0.5, schedule="cubic", start=0, end=0.8, frequency=4)
    return {
        "plain": lambda: [],
        "pruning magnitude 50%": lambda: [PruningCallback(PruningConfig(**prune))],
        "pruning movement 50%": lambda: [PruningCallback(PruningConfig(criterion="movement", **prune))],
        "pruning 2:4": lambda: [PruningCallback(PruningConfig(pattern="2:4", start=0, end=0.8, frequency=4))],
        "distillation (bf16 teacher)": lambda: [
            DistillationCallback(teacher, DistillationConfig(alpha=0.5, temperature=2.0, teacher_dtype="bfloat16"))
        ],
        "QAT int8 per-channel": lambda: [QATCallback(QATConfig(weight_bits=8, granularity="per_channel"))],
        "QAT int4 g128 + int8 act": lambda: [
            QATCallback(QATConfig(weight_bits=4, granularity="per_group", group_size=128, activations="per_token"))
        ],
        "prune + distill + QAT": lambda: [
            DistillationCallback(teacher, DistillationConfig(alpha=0.5, teacher_dtype="bfloat16")),
            PruningCallback(PruningConfig(**prune)),
            QATCallback(QATConfig(weight_bits=8, granularity="per_channel", start=0.5)),
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="gpu_check_out")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--cpu-dry-run", action="store_true", help="tiny model on CPU, to check the script itself")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    on_gpu = torch.cuda.is_available()
    if not on_gpu and not args.cpu_dry_run:
        raise SystemExit("this check needs a CUDA GPU (or --cpu-dry-run)")
    config = LlamaConfig(
        vocab_size=32000 if on_gpu else 256,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 11 // 4,
        num_hidden_layers=args.layers,
        num_attention_heads=16 if on_gpu else 4,
        num_key_value_heads=8 if on_gpu else 2,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    base = LlamaForCausalLM(config)
    params = sum(p.numel() for p in base.parameters())
    teacher = copy.deepcopy(base).to("cuda" if on_gpu else "cpu")
    data = Tokens(config.vocab_size, 256)
    rows = []
    for name, make_callbacks in configurations(teacher).items():
        model = copy.deepcopy(base)
        timer = StepTimer()
        if on_gpu:
            torch.cuda.reset_peak_memory_stats()
        training_args = TrainingArguments(
            output_dir=os.path.join(args.out, "run"),
            max_steps=args.steps,
            per_device_train_batch_size=8,
            learning_rate=1e-4,
            bf16=True,
            report_to=[],
            save_strategy="no",
            logging_steps=args.steps,
            disable_tqdm=True,
            seed=0,
            use_cpu=not on_gpu,
        )
        trainer = Trainer(model=model, args=training_args, train_dataset=data, callbacks=[*make_callbacks(), timer])
        error = None
        try:
            result = trainer.train()
            loss = float(result.training_loss)
        except Exception as exception:  # report every configuration, even a failing one
            error, loss = f"{type(exception).__name__}: {exception}", float("nan")
            traceback.print_exc(limit=-12)
        linear = [m.weight for m in model.model.modules() if isinstance(m, torch.nn.Linear)]
        zeros = sum(int((w == 0).sum()) for w in linear) / max(1, sum(w.numel() for w in linear))
        rows.append(
            {
                "config": name,
                "median_step_ms": statistics.median(timer.times[3:]) * 1000 if len(timer.times) > 3 else float("nan"),
                "train_loss": loss,
                "finite": math.isfinite(loss),
                "linear_sparsity": zeros,
                "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if on_gpu else 0.0,
                "error": error,
            }
        )
        print(rows[-1], flush=True)
        del trainer, model
        if on_gpu:
            torch.cuda.empty_cache()
    plain = rows[0]["median_step_ms"]
    lines = [
        f"Device: {torch.cuda.get_device_name() if on_gpu else 'CPU dry run'}, torch {torch.__version__}; Llama-style model, {params / 1e6:.0f}M "
        f"parameters, batch 8 x 256 tokens, bf16 autocast, {args.steps} steps per configuration (first 3 untimed).",
        "",
        "| configuration | median step (ms) | vs plain | train loss | finite | Linear sparsity | peak GPU memory (GiB) |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['config']} | {row['median_step_ms']:.1f} | {row['median_step_ms'] / plain:.2f}x | "
            f"{row['train_loss']:.3f} | {row['finite']} | {row['linear_sparsity']:.3f} | {row['peak_gpu_gib']:.1f} |"
            + (f" error: {row['error'][:200]}" if row["error"] else "")
        )
    with open(os.path.join(args.out, "gpu_check.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    with open(os.path.join(args.out, "gpu_check.json"), "w") as handle:
        json.dump(rows, handle, indent=2)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
