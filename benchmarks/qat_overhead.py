"""Step-time overhead of QATCallback (weights only, int8, per-channel) over the plain Trainer, measured side by side.

Plain and QAT runs alternate (round 1: plain, QAT; round 2: QAT, plain; ...) on the same model shape and data; each
run's per-step wall times (``on_step_begin`` -> ``on_step_end``) after warm-up steps are pooled per variant and
the medians compared. Writes the "Overhead" section of ``benchmarks/results/qat.md``.

    python benchmarks/qat_overhead.py            # CPU, 1 thread
    python benchmarks/qat_overhead.py --device cuda --bf16
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qat_results import reproducing_arguments, write_section  # noqa: E402

from hf_compress import QATCallback, QATConfig  # noqa: E402


class StepTimer(TrainerCallback):
    def __init__(self, device: str):
        self.device, self.times, self._start = device, [], 0.0

    def _sync(self):
        if self.device == "cuda":
            torch.cuda.synchronize()

    def on_step_begin(self, args, state, control, **kwargs):
        self._sync()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        self.times.append(time.perf_counter() - self._start)


class RandomTokens(torch.utils.data.Dataset):
    def __init__(self, n: int, length: int, vocab: int):
        self.ids = torch.randint(0, vocab, (n, length), generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def build_model(args) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 3,
        num_hidden_layers=args.layers,
        num_attention_heads=max(1, args.hidden // 64),
        num_key_value_heads=max(1, args.hidden // 64),
        max_position_embeddings=args.seq_len,
    )
    return LlamaForCausalLM(config)


def run_once(args, with_qat: bool, output_dir: str) -> list[float]:
    model = build_model(args)
    training_args = TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=args.batch_size,
        max_steps=args.warmup + args.steps,
        learning_rate=1e-4,
        logging_steps=10_000,
        save_strategy="no",
        report_to=[],
        use_cpu=args.device == "cpu",
        bf16=args.bf16,
        seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    dataset = RandomTokens(args.batch_size * (args.warmup + args.steps), args.seq_len, 256)
    trainer = Trainer(model=model, args=training_args, train_dataset=dataset)
    timer = StepTimer(args.device)
    trainer.add_callback(timer)
    if with_qat:
        trainer.add_callback(QATCallback(QATConfig(weight_bits=8, granularity="per_channel")))
    trainer.train()
    return timer.times[args.warmup :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--results", default=os.path.join(os.path.dirname(__file__), "results", "qat.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    times = {"plain": [], "qat": []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_index in range(args.rounds):
            order = ["plain", "qat"] if round_index % 2 == 0 else ["qat", "plain"]
            for variant in order:
                times[variant] += run_once(args, variant == "qat", os.path.join(tmp, variant))
                print(f"round {round_index} {variant}: median step {statistics.median(times[variant]) * 1e3:.1f} ms")

    plain, qat = statistics.median(times["plain"]), statistics.median(times["qat"])
    ratio = qat / plain
    goal = 1.5
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {args.threads} thread(s)"
    command = "python benchmarks/qat_overhead.py " + " ".join(reproducing_arguments(sys.argv[1:]))
    lines = [
        f"Date: {datetime.date.today().isoformat()}. Command: `{command.strip()}`. Device: {device}"
        f"{', bf16 autocast' if args.bf16 else ', fp32'}.",
        "",
        f"Llama {args.layers} layers, hidden {args.hidden}, batch {args.batch_size} x {args.seq_len} tokens; "
        f"{args.rounds} interleaved rounds per variant, {args.steps} timed steps each after {args.warmup} warm-up "
        "steps; medians over all timed steps.",
        "",
        "| variant | median step (ms) | steps timed |",
        "|---|---:|---:|",
        f"| plain Trainer | {plain * 1e3:.1f} | {len(times['plain'])} |",
        f"| + QATCallback (int8 weights, per-channel, minmax) | {qat * 1e3:.1f} | {len(times['qat'])} |",
        "",
        f"**Overhead: {ratio:.3f}x** (goal <= {goal}x): {'reached' if ratio <= goal else 'NOT reached'}.",
    ]
    title = f"Overhead ({'cuda' if args.device == 'cuda' else 'cpu'})"
    write_section(args.results, title, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
