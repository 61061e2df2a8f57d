"""The demo's main job: train a teacher until its eval loss plateaus, compress students from it, and measure them
beside the dense teacher trained on for the same number of steps (the protocol of ``benchmarks/pipelines.py``) and
one-shot pruning. Every number in the report is measured in the run that writes it.

To add a student, append a :class:`StudentSpec` to ``STUDENTS``: it trains from the teacher for
``settings.student_steps`` on the dense reference's batches, is exported, measured and becomes a row of the report.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm
from transformers import Trainer
from transformers.utils import logging as hf_logging

from hf_compress.demo.measure import (
    ModelRow,
    count_parameters,
    folder_bytes,
    hallucination_rate,
    interleaved_latency_ms,
    one_shot_magnitude,
    perplexity,
)
from hf_compress.demo.settings import FULL, QUICK, DemoSettings, demo_recipe, shrunk_recipe
from hf_compress.demo.training import (
    DemoData,
    build_data,
    continue_dense,
    quiet,
    recovery_arguments,
    train_teacher_to_plateau,
)


@dataclass(frozen=True)
class StudentSpec:
    """A compressed student of the demo.

    Args:
        key (`str`): its key in ``results.json`` and the folder name of its export.
        name (`str`): its row label in the report.
        recipe (`Callable[[DemoSettings], dict]`): the compression recipe (see :func:`hf_compress.recipes`).
        export_format (`str`): the ``hf_compress.export`` format it ships in.
        format_label (`str`): how the report names that format.
        finish (`Callable`, *optional*): applied to the trained model before export (returns the model to ship).
    """

    key: str
    name: str
    recipe: Callable[[DemoSettings], dict]
    export_format: str
    format_label: str
    finish: Callable | None = None


STUDENTS: tuple[StudentSpec, ...] = (
    StudentSpec(
        key="student",
        name="compressed student (prune+distill+QAT)",
        recipe=demo_recipe,
        export_format="compressed-tensors",
        format_label="compressed-tensors int8 (pack-quantized)",
    ),
    StudentSpec(
        key="shrunk",
        name="shrunk student (structured: half KV groups + half MLP, distilled)",
        recipe=shrunk_recipe,
        export_format="dequantized",
        format_label="safetensors (smaller dense model, int8 weight grid)",
    ),
)


@dataclass
class Measured:
    """A model to measure: its row key and label, the model in memory, its format and the folder it was saved in."""

    key: str
    name: str
    model: torch.nn.Module
    export_format: str
    folder: str
    training_steps: int


def train_student(spec: StudentSpec, teacher, data: DemoData, settings: DemoSettings, seed: int, output_dir: str):
    """Compress a copy of ``teacher`` with ``spec.recipe`` over the dense reference's steps and batches."""
    from hf_compress.metrics.callback import HallucinationEvalCallback
    from hf_compress.recipes import callbacks_from_recipe

    hallucination_eval = HallucinationEvalCallback(
        data.prompts, data.references, generation_kwargs={"max_new_tokens": 4, "do_sample": False}
    )
    trainer = quiet(
        Trainer(
            model=copy.deepcopy(teacher).requires_grad_(True),  # an earlier student's distillation froze the teacher
            args=recovery_arguments(os.path.join(output_dir, "runs", spec.key), settings, seed),
            train_dataset=data.train,
            eval_dataset=data.train,
            processing_class=data.tokenizer,
            callbacks=[*callbacks_from_recipe(spec.recipe(settings), teacher=teacher), hallucination_eval],
        )
    )
    trainer.train()
    return trainer


def run_demo(output_dir: str = "hf_compress_demo", quick: bool = False, seed: int = 0) -> list[ModelRow]:
    """Run the whole demo and write ``report.md``, ``results.json`` and PNG plots into ``output_dir``."""
    threads = torch.get_num_threads()
    try:
        return _run_demo(output_dir, quick, seed)
    finally:
        torch.set_num_threads(threads)


def _run_demo(output_dir: str, quick: bool, seed: int) -> list[ModelRow]:
    from hf_compress.demo.report import write_plots, write_report
    from hf_compress.quantization.export import export

    settings = QUICK if quick else FULL
    os.makedirs(output_dir, exist_ok=True)
    # one thread: these models are too small for intra-op threads to pay, and on a shared CPU two threads were 14x
    # slower in wall time than one (measured: 100 teacher steps, 115 s vs 8 s at load average 9-11)
    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()
    load_before = os.getloadavg()
    started = time.perf_counter()
    stage_names = ["data", "teacher", "dense reference", *(spec.key for spec in STUDENTS), "one-shot sweep", "measure"]
    stages = tqdm(total=len(stage_names), desc="hf-compress demo", unit="stage")
    stage_seconds: dict[str, float] = {}
    stage_started = time.perf_counter()

    def begin(name: str) -> None:
        stages.set_postfix_str(name)

    def finish(name: str) -> None:
        nonlocal stage_started
        stage_seconds[name] = time.perf_counter() - stage_started
        stage_started = time.perf_counter()
        stages.update()

    begin("data")
    data = build_data(settings, seed)
    finish("data")

    begin("teacher")
    teacher_run = train_teacher_to_plateau(data, settings, seed, output_dir)
    teacher = teacher_run.model
    teacher_dir = os.path.join(output_dir, "teacher")
    teacher.save_pretrained(teacher_dir)
    data.tokenizer.save_pretrained(os.path.join(output_dir, "tokenizer"))
    finish("teacher")

    begin("dense reference")
    dense_trainer = continue_dense(teacher, data, settings, seed, output_dir)
    dense_dir = os.path.join(output_dir, "exports", "dense_reference")
    dense_trainer.model.save_pretrained(dense_dir)
    finish("dense reference")

    teacher_label = (
        f"teacher at its plateau ({teacher_run.steps} steps)"
        if teacher_run.plateau_reached
        else f"teacher, NO plateau within the {teacher_run.steps}-step cap"
    )
    measured = [
        Measured("teacher", teacher_label, teacher, "safetensors fp32", teacher_dir, 0),
        Measured(
            "dense_reference",
            f"dense reference (teacher + {settings.student_steps} steps)",
            dense_trainer.model,
            "safetensors fp32",
            dense_dir,
            settings.student_steps,
        ),
    ]
    students, exports = {}, {}
    for spec in STUDENTS:
        begin(spec.key)
        trainer = train_student(spec, teacher, data, settings, seed, output_dir)
        model = spec.finish(trainer.model) if spec.finish is not None else trainer.model
        folder = os.path.join(output_dir, "exports", f"{spec.key}_{spec.export_format.replace('-', '_')}")
        exports[spec.key] = export(model, folder, format=spec.export_format, overwrite=True)
        students[spec.key] = {"recipe": spec.recipe(settings), "log_history": trainer.state.log_history}
        measured.append(Measured(spec.key, spec.name, model, spec.format_label, folder, settings.student_steps))
        finish(spec.key)

    begin("one-shot sweep")
    sweep = []
    for sparsity in (0.0, 0.25, 0.5, 0.7):
        pruned = one_shot_magnitude(teacher, sparsity)
        sweep.append({"sparsity": sparsity, "hallucination_rate": hallucination_rate(pruned, data)})
    one_shot = one_shot_magnitude(teacher, settings.target_sparsity)
    one_shot_dir = os.path.join(output_dir, "exports", "one_shot")
    one_shot.save_pretrained(one_shot_dir)
    measured.insert(
        2,
        Measured(
            "one_shot",
            f"one-shot magnitude {settings.target_sparsity:.0%} of the teacher (no training)",
            one_shot,
            "safetensors fp32",
            one_shot_dir,
            0,
        ),
    )
    finish("one-shot sweep")

    begin("measure")
    batch = dict(data.tokenizer(data.prompts[:16], return_tensors="pt", padding=True))
    latencies = interleaved_latency_ms([entry.model for entry in measured], batch, settings.latency_runs)
    rows = []
    for entry, latency in zip(measured, latencies):
        params, nonzeros = count_parameters(entry.model)
        rows.append(
            ModelRow(
                key=entry.key,
                name=entry.name,
                in_distribution_perplexity=perplexity(entry.model, data.train),
                heldout_perplexity=perplexity(entry.model, data.heldout),
                hallucination_rate=hallucination_rate(entry.model, data),
                params=params,
                nonzeros=nonzeros,
                export_format=entry.export_format,
                size_bytes=folder_bytes(entry.folder),
                latency_ms=latency,
                training_steps=entry.training_steps,
            )
        )
    finish("measure")
    stages.close()

    results = {
        "settings": asdict(settings),
        "quick": quick,
        "seed": seed,
        "rows": [asdict(row) for row in rows],
        "teacher": {
            "steps": teacher_run.steps,
            "plateau_reached": teacher_run.plateau_reached,
            "curve": teacher_run.curve,
            "log_history": teacher_run.log_history,
        },
        "dense_reference_log_history": dense_trainer.state.log_history,
        "students": students,
        "one_shot_sweep": sweep,
        "export_check_max_abs_diff": {key: _max_abs_diff(result) for key, result in exports.items()},
        "elapsed_seconds": time.perf_counter() - started,
        "stage_seconds": stage_seconds,
        "load_average": {"start": load_before[0], "end": os.getloadavg()[0]},
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
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
