"""The demo's main job: train a teacher on a synthetic world, compress a student with one recipe, measure all three.

Every number in the report is measured in the run that writes it.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments
from transformers.utils import logging as hf_logging

from hf_compress.demo.tokenizer import train_word_tokenizer
from hf_compress.demo.world import build_world, fact_prompts, heldout_sentences, training_sentences

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoSettings:
    countries: int
    hidden_size: int
    layers: int
    teacher_steps: int
    student_steps: int
    batch_size: int = 32
    teacher_lr: float = 3e-3
    student_lr: float = 1e-3
    target_sparsity: float = 0.5
    eval_every: int = 50
    latency_runs: int = 30


QUICK = DemoSettings(countries=10, hidden_size=64, layers=2, teacher_steps=200, student_steps=100, eval_every=50)
FULL = DemoSettings(countries=40, hidden_size=128, layers=4, teacher_steps=900, student_steps=400, eval_every=80)


def demo_recipe(settings: DemoSettings) -> dict:
    """The one recipe the demo compresses with: gradual pruning + distillation + int8 QAT."""
    return {
        "pruning": {
            "target_sparsity": settings.target_sparsity,
            "schedule": "cubic",
            "start": 0.0,
            "end": 0.6,
            "frequency": 10,
            "criterion": "magnitude",
        },
        "distillation": {"loss": "kl", "temperature": 2.0, "alpha": 0.7},
        "quantization": {"weight_bits": 8, "granularity": "per_channel", "start": 0.6},
    }


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
    tokenizer: object
    train: SentenceDataset
    heldout: SentenceDataset
    prompts: list[str]
    references: list[list[str]]


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
        per_device_eval_batch_size=64,
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
    )
    values.update(extra)
    return TrainingArguments(**values)


@torch.no_grad()
def perplexity(model, dataset: SentenceDataset) -> float:
    model.eval()
    total_loss, total_tokens = 0.0, 0
    for start in range(0, len(dataset), 64):
        rows = [dataset[i] for i in range(start, min(start + 64, len(dataset)))]
        batch = {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100, reduction="sum"
        )
        total_loss += float(loss)
        total_tokens += int((labels != -100).sum())
    return math.exp(total_loss / total_tokens)


@torch.no_grad()
def answer_prompts(model, tokenizer, prompts: list[str], max_new_tokens: int = 4) -> list[str]:
    """Greedy completions of the fact prompts, cut after the first full stop: ``prompt + completion``."""
    model.eval()
    period = tokenizer.convert_tokens_to_ids(".")
    tokenizer.padding_side = "left"
    outputs = []
    for start in range(0, len(prompts), 64):
        chunk = prompts[start : start + 64]
        encoded = tokenizer(chunk, return_tensors="pt", padding=True)
        generated = model.generate(
            **encoded,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=[tokenizer.eos_token_id, period],
            pad_token_id=tokenizer.pad_token_id,
        )
        for prompt, row in zip(chunk, generated[:, encoded["input_ids"].shape[1] :]):
            completion = tokenizer.decode(row, skip_special_tokens=True).split(".")[0].strip()
            outputs.append(f"{prompt} {completion}.")
    tokenizer.padding_side = "right"
    return outputs


def hallucination_rate(model, data: DemoData) -> float:
    from hf_compress.metrics import load_metric

    predictions = answer_prompts(model, data.tokenizer, data.prompts)
    result = load_metric("hallucination").compute(predictions=predictions, references=data.references)
    return float(result["hallucination_rate"])


def one_shot_magnitude(model, sparsity: float):
    """A copy of ``model`` with each targeted layer's smallest weights removed at once (no recovery training)."""
    from hf_compress.pruning.masks import apply_masks_
    from hf_compress.pruning.patterns import compute_mask
    from hf_compress.targets import find_target_modules, weight_out_in

    pruned = copy.deepcopy(model)
    modules = find_target_modules(pruned)
    masks = {name: compute_mask(weight_out_in(m.weight.detach(), m).abs(), sparsity) for name, m in modules.items()}
    apply_masks_(modules, masks)
    return pruned


def folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


@torch.no_grad()
def interleaved_latency_ms(models: list, batch: dict, runs: int) -> list[float]:
    """Median forward time of each model on ``batch``, measured in alternating rounds so load from other work on
    the machine hits every model alike."""
    for model in models:
        model.eval()
        for _ in range(3):
            model(**batch)
    times: list[list[float]] = [[] for _ in models]
    for _ in range(runs):
        for index, model in enumerate(models):
            start = time.perf_counter()
            model(**batch)
            times[index].append((time.perf_counter() - start) * 1000)
    return [statistics.median(t) for t in times]


def count_parameters(model) -> tuple[int, int]:
    params = sum(p.numel() for p in model.parameters())
    nonzeros = sum(int((p != 0).sum()) for p in model.parameters())
    return params, nonzeros


@dataclass
class ModelRow:
    name: str
    perplexity: float
    hallucination_rate: float
    params: int
    nonzeros: int
    export_format: str
    size_bytes: int
    latency_ms: float


def run_demo(output_dir: str = "hf_compress_demo", quick: bool = False, seed: int = 0) -> list[ModelRow]:
    """Run the whole demo and write ``report.md``, ``results.json`` and PNG plots into ``output_dir``."""
    from hf_compress.demo.report import write_plots, write_report
    from hf_compress.metrics.callback import HallucinationEvalCallback
    from hf_compress.quantization.export import export
    from hf_compress.recipes import callbacks_from_recipe

    settings = QUICK if quick else FULL
    os.makedirs(output_dir, exist_ok=True)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    hf_logging.set_verbosity_error()
    started = time.perf_counter()
    stages = tqdm(total=6, desc="hf-compress demo", unit="stage")
    stage_seconds: dict[str, float] = {}
    stage_started = time.perf_counter()

    def finish_stage(name: str) -> None:
        nonlocal stage_started
        stage_seconds[name] = time.perf_counter() - stage_started
        stage_started = time.perf_counter()
        stages.update()

    stages.set_postfix_str("data")
    data = build_data(settings, seed)
    finish_stage("data")

    stages.set_postfix_str("teacher")
    teacher = build_teacher(settings, data.tokenizer, seed)
    teacher_trainer = Trainer(
        model=teacher,
        args=training_arguments(
            os.path.join(output_dir, "runs", "teacher"), settings.teacher_steps, settings.teacher_lr, settings, seed
        ),
        train_dataset=data.train,
    )
    teacher_trainer.train()
    teacher_dir = os.path.join(output_dir, "teacher")
    teacher.save_pretrained(teacher_dir)
    data.tokenizer.save_pretrained(teacher_dir)
    finish_stage("teacher")

    stages.set_postfix_str("student")
    recipe = demo_recipe(settings)
    student = copy.deepcopy(teacher)
    hallucination_eval = HallucinationEvalCallback(
        data.prompts, data.references, generation_kwargs={"max_new_tokens": 4, "do_sample": False}
    )
    student_trainer = Trainer(
        model=student,
        args=training_arguments(
            os.path.join(output_dir, "runs", "student"),
            settings.student_steps,
            settings.student_lr,
            settings,
            seed,
            eval_strategy="steps",
            eval_steps=settings.eval_every,
        ),
        train_dataset=data.train,
        eval_dataset=data.heldout,
        processing_class=data.tokenizer,
        callbacks=[*callbacks_from_recipe(recipe, teacher=teacher), hallucination_eval],
    )
    student_trainer.train()
    finish_stage("student")

    stages.set_postfix_str("one-shot sweep")
    sweep = []
    for sparsity in (0.0, 0.25, 0.5, 0.7):
        pruned = one_shot_magnitude(teacher, sparsity)
        sweep.append({"sparsity": sparsity, "hallucination_rate": hallucination_rate(pruned, data)})
    one_shot = one_shot_magnitude(teacher, settings.target_sparsity)
    finish_stage("one-shot sweep")

    stages.set_postfix_str("export")
    exports = os.path.join(output_dir, "exports")
    one_shot_dir = os.path.join(exports, "one_shot")
    one_shot.save_pretrained(one_shot_dir)
    student_dir = os.path.join(exports, "student_compressed_tensors")
    export_result = export(student, student_dir, format="compressed-tensors")
    finish_stage("export")

    stages.set_postfix_str("measure")
    batch = dict(data.tokenizer(data.prompts[:16], return_tensors="pt", padding=True))
    measured = (
        ("teacher (dense fp32)", teacher, "safetensors fp32", teacher_dir),
        (f"one-shot magnitude {settings.target_sparsity:.0%}", one_shot, "safetensors fp32", one_shot_dir),
        ("compressed student (prune+distill+QAT)", student, "compressed-tensors int8 (pack-quantized)", student_dir),
    )
    latencies = interleaved_latency_ms([model for _, model, _, _ in measured], batch, settings.latency_runs)
    rows = []
    for (name, model, fmt, folder), latency in zip(measured, latencies):
        params, nonzeros = count_parameters(model)
        rows.append(
            ModelRow(
                name=name,
                perplexity=perplexity(model, data.heldout),
                hallucination_rate=hallucination_rate(model, data),
                params=params,
                nonzeros=nonzeros,
                export_format=fmt,
                size_bytes=folder_bytes(folder),
                latency_ms=latency,
            )
        )
    finish_stage("measure")
    stages.close()

    elapsed = time.perf_counter() - started
    results = {
        "settings": asdict(settings),
        "quick": quick,
        "seed": seed,
        "recipe": recipe,
        "rows": [asdict(row) for row in rows],
        "one_shot_sweep": sweep,
        "export_check_max_abs_diff": _max_abs_diff(export_result),
        "student_log_history": student_trainer.state.log_history,
        "teacher_log_history": teacher_trainer.state.log_history,
        "elapsed_seconds": elapsed,
        "stage_seconds": stage_seconds,
    }
    with open(os.path.join(output_dir, "results.json"), "w") as handle:
        json.dump(results, handle, indent=2, default=str)
    plots = write_plots(results, output_dir)
    report_path = write_report(results, plots, output_dir)
    print(open(report_path).read())
    return rows


def _max_abs_diff(export_result) -> float | None:
    value = getattr(export_result, "max_abs_diff", None)
    return None if value is None else float(value)
