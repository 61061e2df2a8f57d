"""Does distillation help a pruned student recover? Pruning to 50% with and without DistillationCallback.

Setup (minutes on a CPU): a byte-level Llama teacher (vocab 256) trained here on the text of ``pydoc_data.topics``
(ships with CPython), saved under ``benchmarks/_work/distillation/`` and reused by later runs with the same
settings. Every 20th 128-byte window is held out. By default the teacher trains on 300 windows, long enough to pass
its held-out optimum, and the best of ten evaluations is kept: the teacher is then as good as this model gets on
this data, so it is a real ceiling (with the whole corpus and a few CPU minutes the teacher is still improving
when its schedule ends, and students that simply keep training beat it: ``--train-windows 0`` shows that regime).

Each student starts as a copy of the teacher and is pruned to 50% (``PruningCallback``, gradual cubic schedule,
magnitude) for the same number of steps on the same data in the same order, once with the task loss alone and once
per distillation setting with ``DistillationCallback`` added. Reported: held-out loss (nats per byte) of the
teacher, of the copy pruned one-shot to 50% with no training, and of each student; the share of the teacher's
quality each student recovers, ``(loss_one_shot - loss_student) / (loss_one_shot - loss_teacher)``; and the share
of the gap pruning alone leaves that distillation closes,
``(loss_pruned - loss_distilled) / (loss_pruned - loss_teacher)`` (goal >= 0.5).

    python benchmarks/distillation_quality.py                                   # CPU: ~10 min, ~5 with a cached teacher
    python benchmarks/distillation_quality.py --train-windows 0 --teacher-steps 400   # whole corpus, ~11 min
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import shlex
import sys
import time

import torch
from results_sections import write_section
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

from hf_compress import DistillationCallback, DistillationConfig, PruningCallback, PruningConfig
from hf_compress.targets import find_target_modules

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(HERE, "_work", "distillation")
RESULTS = os.path.join(HERE, "results", "distillation.md")
SEQ_LEN = 128


RESULTS_HEADER = "# Distillation benchmarks\n\n"


def corpus_bytes() -> torch.Tensor:
    import pydoc_data.topics as topics

    text = "\n\n".join(topics.topics[key] for key in sorted(topics.topics))
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.long)


class ByteChunks(torch.utils.data.Dataset):
    """``SEQ_LEN``-byte windows; labels are the inputs (the model shifts them)."""

    def __init__(self, chunks: torch.Tensor):
        self.chunks = chunks

    def __len__(self):
        return len(self.chunks)

    def __getitem__(self, i):
        ids = self.chunks[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def split(train_windows: int) -> tuple[ByteChunks, ByteChunks]:
    """Every 20th window is held out; the first ``train_windows`` of the others are the training set."""
    data = corpus_bytes()
    windows = data[: (len(data) // SEQ_LEN) * SEQ_LEN].view(-1, SEQ_LEN)
    held_out = torch.arange(len(windows)) % 20 == 19
    return ByteChunks(windows[~held_out][:train_windows]), ByteChunks(windows[held_out])


def model_config(width: int, layers: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=256,
        hidden_size=width,
        intermediate_size=width * 3,
        num_hidden_layers=layers,
        num_attention_heads=max(1, width // 32),
        num_key_value_heads=max(1, width // 32),
        max_position_embeddings=SEQ_LEN,
        tie_word_embeddings=False,
    )


def args_for(output_dir: str, steps: int, learning_rate: float, options, **overrides) -> TrainingArguments:
    values = dict(
        output_dir=output_dir,
        max_steps=steps,
        per_device_train_batch_size=options.batch_size,
        per_device_eval_batch_size=64,
        learning_rate=learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, steps // 20),
        weight_decay=0.0,
        logging_steps=max(1, steps // 10),
        save_strategy="no",
        report_to=[],
        use_cpu=options.device == "cpu",
        seed=0,
        data_seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    values.update(overrides)
    return TrainingArguments(**values)


def eval_loss(model: torch.nn.Module, dataset: ByteChunks, batch_size: int = 64) -> float:
    """Mean next-byte cross-entropy (nats) over the held-out windows."""
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            ids = dataset.chunks[start : start + batch_size].to(device)
            logits = model(input_ids=ids).logits[:, :-1].float()
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="sum")
            total, count = total + float(loss), count + ids[:, 1:].numel()
    return total / count


def train_teacher(path: str, train_set: ByteChunks, eval_set: ByteChunks, options) -> float:
    """Train the teacher, evaluating every tenth of the run and keeping the best checkpoint."""
    torch.manual_seed(0)
    teacher = LlamaForCausalLM(model_config(options.width, options.layers))
    every = max(1, options.teacher_steps // 10)
    args = args_for(
        os.path.join(WORK, "teacher_run"),
        options.teacher_steps,
        3e-3,
        options,
        eval_strategy="steps",
        eval_steps=every,
        save_strategy="steps",
        save_steps=every,
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
    )
    began = time.perf_counter()
    Trainer(model=teacher, args=args, train_dataset=train_set, eval_dataset=eval_set).train()
    teacher.save_pretrained(path)
    return time.perf_counter() - began


def one_shot_magnitude_prune_(model: torch.nn.Module, sparsity: float) -> None:
    """Zero the smallest-magnitude ``sparsity`` share of each targeted weight (the reference with no recovery)."""
    with torch.no_grad():
        for module in find_target_modules(model).values():
            weight = module.weight
            k = int(weight.numel() * sparsity)
            threshold = weight.abs().flatten().kthvalue(k).values
            weight[weight.abs() <= threshold] = 0.0


def sparsity_of(model: torch.nn.Module) -> float:
    weights = [module.weight for module in find_target_modules(model).values()]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


PRUNING = dict(target_sparsity=0.5, schedule="cubic", start=0, end=0.5, frequency=10)


def prune_student(teacher_path: str, train_set, distill: DistillationConfig | None, name: str, options):
    student = LlamaForCausalLM.from_pretrained(teacher_path)
    callbacks = [PruningCallback(PruningConfig(**PRUNING))]
    if distill is not None:
        callbacks.append(DistillationCallback(teacher_path, distill))
    trainer = Trainer(
        model=student,
        args=args_for(os.path.join(WORK, name), options.student_steps, options.student_lr, options),
        train_dataset=train_set,
        callbacks=callbacks,
    )
    began = time.perf_counter()
    trainer.train()
    return student, time.perf_counter() - began


def distillation_variants(layers: int) -> dict[str, DistillationConfig]:
    return {
        "kl on logits (T=2, alpha=0.5)": DistillationConfig(loss="kl", temperature=2.0, alpha=0.5),
        f"kl on logits + cosine on hidden states 1-{layers} (T=2, alpha=0.9)": DistillationConfig(
            loss="kl",
            temperature=2.0,
            alpha=0.9,
            layer_map={i: i for i in range(1, layers + 1)},
            hidden_loss="cosine",
            hidden_weight=1.0,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train-windows", type=int, default=300, help="training windows (0 = all of them)")
    parser.add_argument("--teacher-steps", type=int, default=500)
    parser.add_argument("--student-steps", type=int, default=120)
    parser.add_argument("--student-lr", type=float, default=1e-3)
    parser.add_argument("--retrain-teacher", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 is fastest on a busy machine)")
    parser.add_argument("--output", default=RESULTS)
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    started = time.perf_counter()
    os.makedirs(WORK, exist_ok=True)
    train_set, eval_set = split(options.train_windows or None)
    device = torch.device(options.device)

    tag = (
        f"teacher-w{options.width}-l{options.layers}-b{options.batch_size}-s{options.teacher_steps}-n{len(train_set)}"
    )
    teacher_path = os.path.join(WORK, tag)
    teacher_seconds = None
    if options.retrain_teacher or not os.path.exists(os.path.join(teacher_path, "config.json")):
        teacher_seconds = train_teacher(teacher_path, train_set, eval_set, options)
    teacher = LlamaForCausalLM.from_pretrained(teacher_path).to(device)
    loss_teacher = eval_loss(teacher, eval_set)
    one_shot = LlamaForCausalLM.from_pretrained(teacher_path).to(device)
    one_shot_magnitude_prune_(one_shot, 0.5)
    loss_one_shot = eval_loss(one_shot, eval_set)

    pruned, pruned_seconds = prune_student(teacher_path, train_set, None, "pruned", options)
    loss_pruned = eval_loss(pruned, eval_set)
    results = []
    for index, (name, config) in enumerate(distillation_variants(options.layers).items()):
        distilled, seconds = prune_student(teacher_path, train_set, config, f"distilled{index}", options)
        results.append((name, eval_loss(distilled, eval_set), sparsity_of(distilled), seconds))

    def recovered(loss: float) -> str:
        return f"{(loss_one_shot - loss) / (loss_one_shot - loss_teacher):.0%}"

    def gap_closed(loss: float) -> float:
        return (loss_pruned - loss) / (loss_pruned - loss_teacher) if loss_pruned > loss_teacher else math.nan

    total_seconds = time.perf_counter() - started
    command = "python " + " ".join(
        shlex.quote(arg) for arg in [os.path.relpath(__file__, os.path.dirname(HERE)), *sys.argv[1:]]
    )
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else f"{platform.machine()} CPU"
    teacher_note = (
        f"trained in this run ({options.teacher_steps} steps, best of 10 evaluations kept, {teacher_seconds:.0f} s)"
        if teacher_seconds is not None
        else f"reused from `benchmarks/_work/distillation/{tag}` ({options.teacher_steps} steps)"
    )
    lines = [
        f"## Distillation: quality of a 50%-pruned student ({device_name})",
        "",
        f"Date: {datetime.date.today().isoformat()}. torch {torch.__version__}, {options.threads} CPU threads. "
        f"Command: `{command}` (total {total_seconds / 60:.1f} min).",
        "",
        f"Teacher: byte-level Llama ({options.layers} layers, width {options.width}, vocab 256, seq {SEQ_LEN}) on "
        f"`pydoc_data.topics` ({len(train_set)} train / {len(eval_set)} held-out windows of {SEQ_LEN} bytes), "
        f"{teacher_note}. Students: copies of the teacher pruned to 50% (PruningCallback: magnitude, cubic, start 0, "
        f"end 0.5, every 10 steps) for {options.student_steps} steps, batch {options.batch_size}, "
        f"lr {options.student_lr:g} cosine, same data order.",
        "",
        "| student | held-out loss (nats/byte) | sparsity | teacher quality recovered | gap closed vs pruning alone | train s |",
        "|---|---|---|---|---|---|",
        f"| teacher (dense) | {loss_teacher:.4f} | {sparsity_of(teacher):.1%} | 100% | | |",
        f"| one-shot 50% magnitude, no training | {loss_one_shot:.4f} | {sparsity_of(one_shot):.1%} | 0% | | |",
        f"| pruned 50%, task loss only | {loss_pruned:.4f} | {sparsity_of(pruned):.1%} | {recovered(loss_pruned)} | "
        f"0% | {pruned_seconds:.0f} |",
    ]
    for name, loss, sparsity, seconds in results:
        closed = gap_closed(loss)
        if math.isnan(closed):
            gap_text = "n/a: pruning alone leaves no gap (it beats the teacher)"
        else:
            gap_text = f"**{closed:.0%}** ({'goal reached' if closed >= 0.5 else 'goal NOT reached'})"
        lines.append(
            f"| pruned 50% + DistillationCallback: {name} | {loss:.4f} | {sparsity:.1%} | {recovered(loss)} | "
            f"{gap_text} | {seconds:.0f} |"
        )
    lines += [
        "",
        "Teacher quality recovered = (one-shot loss - student loss) / (one-shot loss - teacher loss). Gap closed = "
        "(pruned-alone loss - distilled loss) / (pruned-alone loss - teacher loss); goal >= 50%.",
        "",
    ]
    key = f"quality-{device.type}" + ("-whole-corpus" if not options.train_windows else "")
    write_section(options.output, key, "\n".join(lines), RESULTS_HEADER)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
