"""The demo's data and training runs: the teacher until its eval loss plateaus, then students and the dense
reference for the same number of further steps on the same batches."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset
from transformers import EarlyStoppingCallback, LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments
from transformers.trainer_callback import PrinterCallback

from hf_compress.demo.settings import DemoSettings
from hf_compress.demo.tokenizer import train_word_tokenizer
from hf_compress.demo.world import build_world, fact_prompts, heldout_sentences, training_sentences


class SentenceDataset(Dataset):
    """One sentence per example, ended by [EOS], right-padded; padding is masked out of the loss."""

    def __init__(self, sentences: list[str], tokenizer, length: int):
        self.rows = []
        for sentence in sentences:
            ids = tokenizer(sentence)["input_ids"][: length - 1] + [tokenizer.eos_token_id]
            pad = length - len(ids)
            self.rows.append(
                {
                    "input_ids": torch.tensor(ids + [tokenizer.pad_token_id] * pad),
                    "attention_mask": torch.tensor([1] * len(ids) + [0] * pad),
                    "labels": torch.tensor(ids + [-100] * pad),
                }
            )

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return self.rows[index]


@dataclass
class DemoData:
    """``train``: every fact in the training phrasings; ``heldout``: every fact in a phrasing never trained on."""

    tokenizer: object
    train: SentenceDataset
    heldout: SentenceDataset
    prompts: list[str]
    references: list[list[str]]

    @property
    def eval_sets(self) -> dict[str, SentenceDataset]:
        """The two perplexity sets: in-distribution (the training sentences) and held-out phrasings."""
        return {"in_distribution": self.train, "held_out": self.heldout}


def build_data(settings: DemoSettings, seed: int) -> DemoData:
    world = build_world(settings.countries, seed=seed)
    train_sentences = training_sentences(world, seed=seed)
    eval_sentences = heldout_sentences(world)
    tokenizer = train_word_tokenizer(train_sentences + eval_sentences)
    length = max(len(tokenizer(s)["input_ids"]) for s in train_sentences + eval_sentences) + 1
    prompts, references, _ = fact_prompts(world)
    return DemoData(
        tokenizer,
        SentenceDataset(train_sentences, tokenizer, length),
        SentenceDataset(eval_sentences, tokenizer, length),
        prompts,
        references,
    )


def build_teacher(settings: DemoSettings, tokenizer, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=settings.hidden_size,
        intermediate_size=settings.hidden_size * 2,
        num_hidden_layers=settings.layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def training_arguments(
    output_dir: str, steps: int, lr: float, settings: DemoSettings, seed: int, **extra
) -> TrainingArguments:
    values = dict(
        output_dir=output_dir,
        max_steps=steps,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=256,
        learning_rate=lr,
        warmup_steps=max(1, steps // 20),
        lr_scheduler_type="cosine",
        weight_decay=0.0,
        logging_steps=5,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    values.update(extra)
    return TrainingArguments(**values)


@dataclass
class TeacherRun:
    """The teacher at its plateau, with its eval curve (``[{"step", "in_distribution", "held_out"}]``, losses)."""

    model: LlamaForCausalLM
    steps: int
    plateau_reached: bool
    curve: list[dict]
    log_history: list[dict]


def eval_curve(log_history: list[dict]) -> list[dict]:
    """Eval losses by step from a Trainer's ``log_history`` with the two ``DemoData.eval_sets``."""
    by_step: dict[int, dict] = {}
    for entry in log_history:
        for name in ("in_distribution", "held_out"):
            if f"eval_{name}_loss" in entry:
                by_step.setdefault(entry["step"], {"step": entry["step"]})[name] = float(entry[f"eval_{name}_loss"])
    return [by_step[step] for step in sorted(by_step)]


def train_teacher_to_plateau(data: DemoData, settings: DemoSettings, seed: int, output_dir: str) -> TeacherRun:
    """Train the dense teacher at a constant learning rate until its in-distribution eval loss plateaus.

    The stopping rule is transformers' ``EarlyStoppingCallback`` on ``eval_in_distribution_loss``: stop once
    ``settings.plateau_patience`` evaluations in a row improve the best value by at most
    ``settings.plateau_min_delta`` nats; ``settings.teacher_max_steps`` caps the run.
    """
    teacher = build_teacher(settings, data.tokenizer, seed)
    args = training_arguments(
        os.path.join(output_dir, "runs", "teacher"),
        settings.teacher_max_steps,
        settings.teacher_lr,
        settings,
        seed,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=settings.teacher_eval_every,
        eval_strategy="steps",
        eval_steps=settings.teacher_eval_every,
        metric_for_best_model="eval_in_distribution_loss",
        greater_is_better=False,
    )
    plateau = EarlyStoppingCallback(settings.plateau_patience, settings.plateau_min_delta)
    trainer = quiet(
        Trainer(model=teacher, args=args, train_dataset=data.train, eval_dataset=data.eval_sets, callbacks=[plateau])
    )
    trainer.train()
    steps = trainer.state.global_step
    return TeacherRun(
        model=teacher,
        steps=steps,
        plateau_reached=plateau.early_stopping_patience_counter >= settings.plateau_patience,
        curve=eval_curve(trainer.state.log_history),
        log_history=trainer.state.log_history,
    )


def quiet(trainer: Trainer) -> Trainer:
    """Drop the callback that prints every log line: the demo shows its own progress bar and then the report."""
    trainer.remove_callback(PrinterCallback)
    return trainer


def recovery_arguments(output_dir: str, settings: DemoSettings, seed: int, **extra) -> TrainingArguments:
    """The ``student_steps`` after the teacher: one schedule and one batch order for every student and the dense
    reference (same seed and data seed)."""
    return training_arguments(
        output_dir,
        settings.student_steps,
        settings.student_lr,
        settings,
        seed,
        eval_strategy="steps",
        eval_steps=settings.eval_every,
        **extra,
    )


def continue_dense(teacher, data: DemoData, settings: DemoSettings, seed: int, output_dir: str) -> Trainer:
    """The dense reference: a copy of the teacher trained on for the students' steps, batches and learning rate."""
    trainer = quiet(
        Trainer(
            model=copy.deepcopy(teacher),
            args=recovery_arguments(os.path.join(output_dir, "runs", "dense_reference"), settings, seed),
            train_dataset=data.train,
            eval_dataset=data.train,
        )
    )
    trainer.train()
    return trainer
