"""Step-time overhead of DistillationCallback: is a distilled step just a student step plus a teacher forward?

Measured in one run, interleaved round by round on the same batches: (A) the student's Trainer step alone,
(B) the teacher's forward alone (eval, no_grad, same batch), (C) the student's Trainer step with
DistillationCallback, for the logit loss alone and with hidden-state distillation through learned projections.
Step times come from on_step_begin / on_step_end; the first steps of every round are dropped. On a GPU they are
wall-clock times between device synchronisations; on the CPU they are the CPU time of the training thread (torch
runs with one intra-op thread), which other processes on a shared machine cannot inflate the way they inflate
wall-clock time. Reported: medians and ``overhead = C / (A + B)`` (goal <= 1.10).

    python benchmarks/distillation_overhead.py                 # CPU here, ~5 min
    python benchmarks/distillation_overhead.py --student 512x4 --teacher 1024x4 --batch-size 4
    python benchmarks/distillation_overhead.py --device cuda   # on a GPU machine
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import shlex
import statistics
import sys
import time

import torch
from results_sections import write_section
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments

from hf_compress import DistillationCallback, DistillationConfig

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "distillation.md")


RESULTS_HEADER = "# Distillation benchmarks\n\n"


def clock(device: str) -> float:
    """Wall-clock after a device sync on a GPU; this thread's CPU time on the CPU."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.thread_time()


class StepTimer(TrainerCallback):
    def __init__(self, device: str):
        self.device, self.times, self._began = device, [], 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._began = clock(self.device)

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(clock(self.device) - self._began)


class RandomTokens(torch.utils.data.Dataset):
    def __init__(self, n: int, length: int, vocab: int):
        self.ids = torch.randint(0, vocab, (n, length), generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        ids = self.ids[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def llama(width: int, layers: int, vocab: int, length: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=vocab,
            hidden_size=width,
            intermediate_size=width * 3,
            num_hidden_layers=layers,
            num_attention_heads=max(1, width // 64),
            num_key_value_heads=max(1, width // 64),
            max_position_embeddings=length,
            tie_word_embeddings=False,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--student", default="256x4", help="width x layers")
    parser.add_argument("--teacher", default="512x4", help="width x layers")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=4, help="steps per round (the first is dropped)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision for the student, bf16 teacher")
    parser.add_argument("--output", default=RESULTS)
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    device = options.device
    started = time.perf_counter()

    student_width, student_layers = (int(v) for v in options.student.split("x"))
    teacher_width, teacher_layers = (int(v) for v in options.teacher.split("x"))
    base_student = llama(student_width, student_layers, options.vocab, options.length)
    teacher = llama(teacher_width, teacher_layers, options.vocab, options.length).to(device).eval()
    if options.bf16:
        teacher.to(torch.bfloat16)
    dataset = RandomTokens(options.batch_size * options.steps, options.length, options.vocab)
    teacher_dtype = "bfloat16" if options.bf16 else None
    variants = {
        "student step alone (A)": None,
        "with DistillationCallback, kl on logits (C1)": DistillationConfig(alpha=0.5, teacher_dtype=teacher_dtype),
        "with DistillationCallback, kl + hidden mse via projections (C2)": DistillationConfig(
            alpha=0.5, layer_map={student_layers: teacher_layers}, teacher_dtype=teacher_dtype
        ),
    }
    trainers, timers = {}, {}
    for name, config in variants.items():
        timer = StepTimer(device)
        callbacks = [timer] if config is None else [timer, DistillationCallback(teacher, config)]
        args = TrainingArguments(
            output_dir=os.path.join(HERE, "_work", "distillation_overhead"),
            max_steps=options.steps,
            per_device_train_batch_size=options.batch_size,
            learning_rate=1e-4,
            logging_steps=options.steps,
            save_strategy="no",
            report_to=[],
            use_cpu=device == "cpu",
            bf16=options.bf16,
            disable_tqdm=True,
            seed=0,
        )
        trainers[name] = Trainer(
            model=copy.deepcopy(base_student), args=args, train_dataset=dataset, callbacks=callbacks
        )
        timers[name] = timer

    teacher_times = []
    batch = {key: dataset.ids[: options.batch_size].to(device) for key in ("input_ids",)}
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    for _ in range(options.rounds):
        for name, trainer in trainers.items():
            before = len(timers[name].times)
            trainer.train()
            del timers[name].times[before : before + 1]  # warm-up step of this round
        with torch.no_grad():
            for step in range(options.steps):
                began = clock(device)
                teacher(**batch, use_cache=False)
                if step >= 1:
                    teacher_times.append(clock(device) - began)

    medians = {name: statistics.median(timer.times) for name, timer in timers.items()}
    student_alone = medians["student step alone (A)"]
    teacher_alone = statistics.median(teacher_times)
    baseline = student_alone + teacher_alone
    total_minutes = (time.perf_counter() - started) / 60
    device_name = torch.cuda.get_device_name() if device.startswith("cuda") else f"{platform.machine()} CPU"
    command = "python " + " ".join(
        shlex.quote(arg) for arg in [os.path.relpath(__file__, os.path.dirname(HERE)), *sys.argv[1:]]
    )
    lines = [
        f"## Distillation: step-time overhead ({device_name})",
        "",
        f"Date: {datetime.date.today().isoformat()}. torch {torch.__version__}, {options.threads} CPU threads. "
        f"Command: `{command}` ({total_minutes:.1f} min).",
        "",
        f"Student Llama {student_width}x{student_layers} layers, teacher Llama {teacher_width}x{teacher_layers} layers, "
        f"vocab {options.vocab}, batch {options.batch_size} x {options.length} tokens"
        f"{', bf16 mixed precision, bf16 teacher' if options.bf16 else ', fp32'}. {options.rounds} interleaved rounds of "
        f"{options.steps} steps, the first of each dropped; medians over {len(teacher_times)} steps per variant.",
        "",
        f"| variant | median step ({'ms, wall-clock' if device.startswith('cuda') else 'ms of CPU time'}) | "
        "overhead = step / (A + B) |",
        "|---|---|---|",
        f"| student step alone (A) | {student_alone * 1e3:.1f} | |",
        f"| teacher forward alone (B) | {teacher_alone * 1e3:.1f} | |",
        f"| A + B | {baseline * 1e3:.1f} | 1.00 |",
    ]
    for name, value in medians.items():
        if value is not student_alone and name != "student step alone (A)":
            ratio = value / baseline
            verdict = "goal <= 1.10 reached" if ratio <= 1.10 else "goal <= 1.10 NOT reached"
            lines.append(f"| {name} | {value * 1e3:.1f} | **{ratio:.3f}** ({verdict}) |")
    lines.append("")
    key = f"overhead-{'cuda' if device.startswith('cuda') else 'cpu'}-{options.student}-{options.teacher}"
    key += "-bf16" if options.bf16 else ""
    write_section(options.output, key, "\n".join(lines), RESULTS_HEADER)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
