"""Quality half of ``benchmarks/structured_bench.py`` (``--only quality``): the pipelines protocol for structured
students. Same data as ``benchmarks/pipelines.py`` (byte windows of ``pydoc_data.topics``, every 20th held out), a
byte-level Llama teacher trained here, R recovery steps for every student with the same batches and learning rate,
perplexity divided by that of the dense teacher continued for R steps.

Students (hf-compress: ``shrink_to`` on calibration batches, then R steps with ``DistillationCallback``):
width-only (Minitron activation criterion), depth-only (block influence), and the budget search; peers:
Torch-Pruning 1.6.1 (``benchmarks/structured_torch_pruning.py``, its own venv) + the same R steps with the same KD,
and the same small architecture from random init for R and 10 x R steps.
"""

from __future__ import annotations

import argparse
import copy
import glob
import json
import os
import subprocess
import time

import torch
from pipelines import ByteWindows, perplexity, split_windows, training_args
from transformers import LlamaConfig, LlamaForCausalLM, Trainer

from hf_compress import (
    DistillationCallback,
    DistillationConfig,
    StructuredPruningCallback,
    StructuredPruningConfig,
    shrink_to,
)
from hf_compress.structured.families import family_of
from hf_compress.structured.selection import resolve_shape

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(HERE, "_work", "structured")
TP_PYTHON = "/tmp/tpvenv/bin/python"
TP_SCRIPT = os.path.join(HERE, "structured_torch_pruning.py")
# Torch-Pruning's uniform width ratio per level: 0.375 (hidden 128 -> 80, a multiple of the heads) keeps about 0.4x of the parameters (level a), 0.5 about 0.26x
TP_RATIOS = {"tp_a": 0.375, "tp_b": 0.5}
DEFAULT_RECOVERY_LR = 5e-4  # the protocol
SWEEP_RUNS = "dense,width_b,tp_b"


def teacher_config(width: int, layers: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=256,
        hidden_size=width,
        intermediate_size=3 * width,
        num_hidden_layers=layers,
        num_attention_heads=width // 32,
        num_key_value_heads=width // 32,
        head_dim=32,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )


def params(model) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def train(model, train_set, options, steps, callbacks=(), lr=None, output="run"):
    args = training_args(
        os.path.join(WORK, output), steps, lr or options.lr, options.batch_size, seed=options.recovery_seed
    )
    began = time.perf_counter()
    Trainer(model=model, args=args, train_dataset=train_set, callbacks=list(callbacks)).train()
    return time.perf_counter() - began


def kd(teacher, options):
    """Logit KD, plus hidden-state MSE on every block output (learned projections across the narrower width) when
    ``--hidden-weight`` is above 0; only for students with the teacher's depth."""
    hidden = {}
    if options.hidden_weight > 0:
        hidden = {"layer_map": {i: i for i in range(1, options.layers + 1)}, "hidden_weight": options.hidden_weight}
    config = DistillationConfig(alpha=options.kd_alpha, temperature=options.kd_temperature, **hidden)
    return DistillationCallback(teacher, config)


def kd_recipe(options) -> tuple[float, float, float]:
    """The ``(alpha, temperature, hidden_weight)`` that ``kd`` uses."""
    return options.kd_alpha, options.kd_temperature, options.hidden_weight


def one_shot_config(options, shape=None, target=None, criterion="activation") -> StructuredPruningConfig:
    """The one-shot students' settings: a fixed ``shape``, or the budget search for ``target`` parameters."""
    return StructuredPruningConfig(
        shape=shape,
        target_params=target,
        criterion=criterion,
        depth_criterion="block_influence",
        search_steps=options.search_steps,
        search_candidates=3,
        hidden_rotation=options.hidden_rotation,
        refit_writers=bool(options.refit_writers),
    )


def one_shot_tag(options) -> str:
    """Suffix naming the one-shot settings: '' for neither rotation nor refit (the code before 2026-12-07, whose
    results sections keep their names), else ``-rot<mode>`` and ``-refit`` (the library's defaults: both)."""
    return ("" if options.hidden_rotation == "none" else f"-rot{options.hidden_rotation}") + (
        "-refit" if options.refit_writers else ""
    )


def recipe_tag(options) -> str:
    """Suffix naming the recovery settings that differ from the issue's protocol ('' for the protocol itself)."""
    return (
        ("" if options.lr == DEFAULT_RECOVERY_LR else f"-lr{options.lr:g}")
        + kd_tag(kd_recipe(options))
        + ("" if options.recovery_seed == 0 else f"-seed{options.recovery_seed}")
        + one_shot_tag(options)
    )


def one_shot_words(options) -> str:
    return f"hidden rotation {options.hidden_rotation}, writer refit {'on' if options.refit_writers else 'off'}"


def recipe_words(options) -> str:
    words = f"recovery lr {options.lr:g}, KD alpha {options.kd_alpha:g} T {options.kd_temperature:g}"
    if options.hidden_weight:
        words += f", hidden-state MSE weight {options.hidden_weight:g}"
    words += f", seed {options.recovery_seed}"
    if one_shot_tag(options):
        words += f", {one_shot_words(options)}"
    return words


def kd_tag(recipe: tuple[float, float, float]) -> str:
    """Suffix naming the KD settings of ``(alpha, temperature, hidden_weight)`` that differ from the default recipe
    (alpha 0.5, T 2, no hidden loss)."""
    alpha, temperature, hidden = recipe
    return (
        ("" if alpha == 0.5 else f"-alpha{alpha:g}")
        + ("" if temperature == 2.0 else f"-T{temperature:g}")
        + ("" if hidden == 0 else f"-hidden{hidden:g}")
    )


def quality_options(argv: list[str], extra=()):
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--teacher-steps", type=int, default=400)
    parser.add_argument("--teacher-batch-size", type=int, default=16)
    parser.add_argument("--teacher-lr", type=float, default=2e-3)
    parser.add_argument("--recovery-steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=DEFAULT_RECOVERY_LR)
    parser.add_argument("--kd-alpha", type=float, default=0.5)
    parser.add_argument("--kd-temperature", type=float, default=2.0)
    parser.add_argument("--hidden-weight", type=float, default=0.0, help="hidden-state MSE weight (0: logits only)")
    parser.add_argument("--calibration-windows", type=int, default=64)
    parser.add_argument("--recovery-seed", type=int, default=0, help="data order of the R steps (not the teacher's)")
    parser.add_argument(
        "--runs",
        default="dense,width_b,tp_b,budget_b,width_a,depth_a,budget_a,tp_a,budget_a2,scratch_a,scratch10_a,"
        "scratch_b,scratch10_b",
    )
    parser.add_argument("--search-steps", type=int, default=20)
    parser.add_argument(
        "--hidden-rotation", default="auto", choices=["auto", "pca", "none"], help="StructuredPruningConfig field"
    )
    parser.add_argument("--refit-writers", type=int, default=1, choices=[0, 1], help="StructuredPruningConfig field")
    parser.add_argument(
        "--extra-shapes",
        default="{}",
        help='more named student shapes, JSON: {"width_b_kv8": {"num_key_value_heads": 8, ...}}',
    )
    for flag, kwargs in extra:
        parser.add_argument(flag, **kwargs)
    return parser.parse_args(argv)


def load_teacher(options, train_set):
    """The teacher of ``options`` (trained on ``train_set`` the first time, then read from ``WORK``)."""
    tag = f"teacher-w{options.width}-l{options.layers}-s{options.teacher_steps}"
    teacher_path = os.path.join(WORK, tag)
    if not os.path.exists(os.path.join(teacher_path, "model.safetensors")):
        torch.manual_seed(0)
        teacher = LlamaForCausalLM(teacher_config(options.width, options.layers))
        args = training_args(
            os.path.join(WORK, "teacher_run"), options.teacher_steps, options.teacher_lr, options.teacher_batch_size
        )
        began = time.perf_counter()
        Trainer(model=teacher, args=args, train_dataset=train_set).train()
        teacher.save_pretrained(teacher_path)
        print(f"teacher trained in {time.perf_counter() - began:.0f} s", flush=True)
    return LlamaForCausalLM.from_pretrained(teacher_path).eval(), teacher_path, tag


def calibration_batches(windows, count: int) -> list[dict]:
    chosen = torch.randperm(len(windows), generator=torch.Generator().manual_seed(0))[:count]
    return [
        {"input_ids": windows.windows[chosen[i : i + 8]], "labels": windows.windows[chosen[i : i + 8]]}
        for i in range(0, len(chosen), 8)
    ]


def shapes_for(width: int, layers: int, extra: str = "{}") -> dict:
    # level a: about half the parameters; level b: the shape Torch-Pruning's ratio 0.5 gives (about a quarter)
    return json.loads(extra) | {
        "width_a": {
            "num_key_value_heads": width // 64,
            "intermediate_size": 3 * width // 2,
            "hidden_size": 3 * width // 4,
        },
        "depth_a": {"num_hidden_layers": layers // 2},
        "width_b": {
            "num_key_value_heads": width // 64,
            "intermediate_size": 3 * width // 2,
            "hidden_size": width // 2,
        },
    }


def gradual_student(teacher, shape: dict, options):
    """A copy of the teacher and the callbacks that prune it gradually to ``shape`` while it distills (shrunk at
    train end, in place): masks follow the cubic schedule over the first 60% of the R steps, re-scored every 10."""
    config = StructuredPruningConfig(
        shape=shape, mode="gradual", criterion="activation", end_step=0.6, update_every=10
    )
    return copy.deepcopy(teacher).requires_grad_(True), [StructuredPruningCallback(config), kd(teacher, options)]


def shape_params(model, shape: dict) -> int:
    family = family_of(model)
    return family.parameters_of(resolve_shape(family, shape)[0])


def shape_of(model) -> dict:
    c = model.config
    return {
        "num_layers": c.num_hidden_layers,
        "hidden": c.hidden_size,
        "num_heads": c.num_attention_heads,
        "num_kv_heads": c.num_key_value_heads,
        "intermediate": c.intermediate_size,
    }


def run_quality(argv: list[str]):
    options = quality_options(argv)
    torch.set_num_threads(1)
    os.makedirs(WORK, exist_ok=True)
    train_set, held_out = split_windows()
    teacher, teacher_path, tag = load_teacher(options, train_set)
    teacher_params = params(teacher)
    calibration = calibration_batches(train_set, options.calibration_windows)
    # recovery settings other than the protocol get their own results file and section
    recipe = recipe_tag(options)
    results_path = os.path.join(WORK, f"{tag}-R{options.recovery_steps}{recipe}.json")
    results = json.load(open(results_path)) if os.path.exists(results_path) else {}
    teacher_ppl = perplexity(teacher, held_out)
    shapes = shapes_for(options.width, options.layers, options.extra_shapes)

    def save():
        with open(results_path, "w") as handle:
            json.dump(results, handle, indent=2)

    def student_run(key, shape=None, target=None, criterion="activation"):
        config = one_shot_config(options, shape, target, criterion)
        began = time.perf_counter()
        small, details = shrink_to(teacher, config, calibration, return_details=True)
        small.requires_grad_(True)  # the teacher is frozen by the KD callbacks of earlier runs; the copy is not
        one_shot_ppl = perplexity(small, held_out)
        seconds = train(small, train_set, options, options.recovery_steps, [kd(teacher, options)], output=key)
        results[key] = {
            "params": params(small),
            "fraction": params(small) / teacher_params,
            "one_shot_ppl": one_shot_ppl,
            "ppl": perplexity(small, held_out),
            "shape": details["shape"],
            "search": details["search"],
            "seconds": time.perf_counter() - began,
            "train_seconds": seconds,
        }
        small.save_pretrained(os.path.join(WORK, f"{tag}{recipe}-{key}"))
        save()

    for key in options.runs.split(","):
        if key in results:
            print(f"{key}: cached", flush=True)
            continue
        print(f"== {key}", flush=True)
        if key == "dense":
            model = copy.deepcopy(teacher)
            seconds = train(model, train_set, options, options.recovery_steps, output=key)
            results[key] = {
                "params": teacher_params,
                "fraction": 1.0,
                "ppl": perplexity(model, held_out),
                "train_seconds": seconds,
                "lr": options.lr,
                "recovery_seed": options.recovery_seed,
            }
            save()
        elif key in shapes:
            student_run(key, shape=shapes[key])
        elif key.startswith("gradual_"):
            model, callbacks = gradual_student(teacher, shapes["width_" + key.rsplit("_", 1)[1]], options)
            seconds = train(model, train_set, options, options.recovery_steps, callbacks, output=key)
            results[key] = {
                "params": params(model),
                "fraction": params(model) / teacher_params,
                "ppl": perplexity(model, held_out),
                "shape": shape_of(model),
                "train_seconds": seconds,
            }
            save()
        elif key == "budget_a":
            student_run(key, target=results.get("width_a", {}).get("params", int(0.5 * teacher_params)))
        elif key == "budget_b":
            student_run(key, target=results["tp_b"]["params"] if "tp_b" in results else results["width_b"]["params"])
        elif key == "budget_a2":  # the budget search at Torch-Pruning's level-a parameter count
            student_run(key, target=results["tp_a"]["params"])
        elif key in TP_RATIOS:
            if not os.path.exists(TP_PYTHON):
                print("Torch-Pruning venv missing; skipped", flush=True)
                continue
            out = os.path.join(WORK, f"{tag}-{key}")
            began = time.perf_counter()
            done = subprocess.run([TP_PYTHON, TP_SCRIPT, teacher_path, out, str(TP_RATIOS[key])], timeout=1800)
            if done.returncode != 0:
                print(f"Torch-Pruning run failed (exit {done.returncode}); skipped", flush=True)
                continue
            model = LlamaForCausalLM.from_pretrained(out)
            one_shot_ppl = perplexity(model, held_out)
            seconds = train(model, train_set, options, options.recovery_steps, [kd(teacher, options)], output=key)
            results[key] = {
                "params": params(model),
                "fraction": params(model) / teacher_params,
                "one_shot_ppl": one_shot_ppl,
                "ppl": perplexity(model, held_out),
                "shape": json.load(open(os.path.join(out, "config.json"))).get("hidden_size"),
                "seconds": time.perf_counter() - began,
                "train_seconds": seconds,
            }
            save()
        elif key.startswith("scratch"):
            steps = options.recovery_steps * (10 if key.startswith("scratch10") else 1)
            source = key.split("_", 1)[1]  # scratch10_budget_b: the shape of the budget_b student
            if source in ("a", "b"):  # Torch-Pruning's shape of that level when it ran, else the width-only one
                source = f"tp_{source}" if f"tp_{source}" in results else f"width_{source}"
            source_dir = f"{tag}-{source}" if source.startswith("tp") else f"{tag}{recipe}-{source}"
            config = LlamaConfig.from_pretrained(os.path.join(WORK, source_dir))
            torch.manual_seed(0)
            model = LlamaForCausalLM(config)
            seconds = train(model, train_set, options, steps, lr=options.teacher_lr, output=key)
            results[key] = {
                "params": params(model),
                "fraction": params(model) / teacher_params,
                "steps": steps,
                "ppl": perplexity(model, held_out),
                "train_seconds": seconds,
            }
            save()
        print(json.dumps(results.get(key)), flush=True)

    return (
        ("quality" if options.width == 128 else f"quality-w{options.width}") + recipe,
        f"Quality: structured students vs Torch-Pruning and from-scratch (pipelines protocol, teacher width "
        f"{options.width}{'' if not recipe else ', ' + recipe_words(options)})",
        table(results, options, teacher_ppl, teacher_params, best_dense_ppl(tag, options), shapes),
    )


def torch_pruning_student(teacher_path: str, tag: str, key: str):
    """Torch-Pruning's one-shot student of level ``key`` (pruned in its own venv the first time), or None."""
    out = os.path.join(WORK, f"{tag}-{key}")
    if not os.path.exists(os.path.join(out, "config.json")):
        if not os.path.exists(TP_PYTHON):
            print("Torch-Pruning venv missing; skipped", flush=True)
            return None
        done = subprocess.run([TP_PYTHON, TP_SCRIPT, teacher_path, out, str(TP_RATIOS[key])], timeout=1800)
        if done.returncode != 0:
            print(f"Torch-Pruning run failed (exit {done.returncode}); skipped", flush=True)
            return None
    return LlamaForCausalLM.from_pretrained(out)


def run_name(key: str, lr: float, recipe: tuple[float, float, float], one_shot: str = "") -> str:
    """Cache key of one dev-split run: the student, the lr, and the KD and one-shot settings (``one_shot_tag``)
    where they are not the defaults."""
    if key == "dense":
        return f"{key}@{lr:g}"
    one_shot = "" if key in TP_RATIOS else one_shot  # Torch-Pruning's students do not use hf-compress's one-shot
    return f"{key}@{lr:g}{(kd_tag(recipe) + one_shot).replace('-', ' ')}"


def kd_recipes(options) -> list[tuple[float, float, float]]:
    """``(alpha, temperature, hidden_weight)`` of every KD recipe of the sweep."""
    return [
        (float(alpha), float(temperature), float(hidden))
        for alpha in options.kd_alphas.split(",")
        for temperature in options.kd_temperatures.split(",")
        for hidden in options.hidden_weights.split(",")
    ]


def run_recovery_lr(argv: list[str]):
    """Choose the recovery learning rate and KD recipe on a dev split of the training windows; the held-out windows
    stay unread.

    The dev split is every ``--dev-every``-th training window; recovery trains on the rest. The teacher is the one
    ``run_quality`` uses (it saw the dev windows in its own training, the same for every candidate). Every
    combination of ``--lrs``, ``--kd-alphas``, ``--kd-temperatures`` and ``--hidden-weights`` runs for every
    student of ``--sweep-runs``; the dense reference runs once per lr.
    """
    extra = [
        ("--lrs", {"default": "5e-4,1e-3,2e-3"}),
        ("--kd-alphas", {"default": "0.5"}),
        ("--kd-temperatures", {"default": "2"}),
        ("--hidden-weights", {"default": "0"}),
        ("--dev-every", {"type": int, "default": 19}),
        ("--sweep-runs", {"default": SWEEP_RUNS}),
    ]
    options = quality_options(argv, extra)
    torch.set_num_threads(1)
    os.makedirs(WORK, exist_ok=True)
    train_set, _ = split_windows()
    teacher, teacher_path, tag = load_teacher(options, train_set)
    is_dev = torch.arange(len(train_set)) % options.dev_every == 0
    fit, dev = ByteWindows(train_set.windows[~is_dev]), ByteWindows(train_set.windows[is_dev])
    calibration = calibration_batches(fit, options.calibration_windows)
    shapes = shapes_for(options.width, options.layers, options.extra_shapes)
    lrs = [float(lr) for lr in options.lrs.split(",")]
    keys = options.sweep_runs.split(",")
    recipes = kd_recipes(options)
    # one results file per invocation's runs and recipes, so sweeps can run side by side; every file is read
    prefix = os.path.join(WORK, f"{tag}-R{options.recovery_steps}-lr-selection")
    results = {}
    for path in sorted(glob.glob(prefix + "*.json")):
        results.update(json.load(open(path)))
    suffix = (
        "".join(f"-{k}" for k in keys)
        + "".join(f"-a{a:g}T{t:g}h{h:g}" for a, t, h in recipes if (a, t, h) != (0.5, 2.0, 0.0))
        + one_shot_tag(options)
    )
    results_path = prefix + ("" if suffix == "-dense-width_b-tp_b" else suffix) + ".json"
    rows = []  # (recipe, lr) in the order run
    for recipe in recipes:
        options.kd_alpha, options.kd_temperature, options.hidden_weight = recipe  # what kd() reads
        for lr in lrs:
            rows.append((recipe, lr))
            for key in keys:
                name = run_name(key, lr, recipe, one_shot_tag(options))
                if name in results:
                    continue
                print(f"== {name}", flush=True)
                if key == "dense":
                    model, callbacks = copy.deepcopy(teacher).requires_grad_(True), []  # KD runs freeze the teacher
                elif key in shapes:
                    config = one_shot_config(options, shape=shapes[key])
                    model, callbacks = shrink_to(teacher, config, calibration), [kd(teacher, options)]
                    model.requires_grad_(True)
                elif key.startswith("gradual_"):
                    model, callbacks = gradual_student(teacher, shapes["width_" + key.rsplit("_", 1)[1]], options)
                elif key in ("budget_a", "budget_b"):  # the budget search at the width-only shape's parameters
                    config = one_shot_config(options, target=shape_params(teacher, shapes["width_" + key[-1]]))
                    model, callbacks = shrink_to(teacher, config, calibration), [kd(teacher, options)]
                    model.requires_grad_(True)
                elif key in TP_RATIOS:
                    model, callbacks = torch_pruning_student(teacher_path, tag, key), [kd(teacher, options)]
                    if model is None:
                        continue
                else:
                    raise SystemExit(
                        f"--sweep-runs: unknown {key!r}; use dense, {', '.join(shapes)}, gradual_a, gradual_b, "
                        f"{', '.join(TP_RATIOS)}"
                    )
                seconds = train(model, fit, options, options.recovery_steps, callbacks, lr=lr, output=f"sweep-{key}")
                results[name] = {"dev_ppl": perplexity(model, dev), "train_seconds": seconds}
                with open(results_path, "w") as handle:
                    json.dump(results, handle, indent=2)
                print(json.dumps(results[name]), flush=True)

    def dev_ppl(key, recipe, lr):
        found = results.get(run_name(key, lr, recipe, one_shot_tag(options)))
        return None if found is None else found["dev_ppl"]

    dense = min((p for p in (dev_ppl("dense", r, lr) for r, lr in rows) if p is not None), default=None)
    lines = [
        f"Teacher as in the quality table (width {options.width}, {options.teacher_steps} steps). Dev split: every "
        f"{options.dev_every}th training window ({len(dev)} windows); recovery: R = {options.recovery_steps} steps "
        f"of batch {options.batch_size} on the other {len(fit)} training windows, cosine. KD: `alpha` weighs the "
        "distillation term against the task loss, `T` is the temperature, `hidden` the weight of a hidden-state MSE "
        "on every block output through learned projections (0: logits only). The held-out windows are not read. "
        "The teacher saw the dev windows in its own training, so the dense model's dev perplexity is low and rises "
        "with the learning rate as it drifts from them; ratios are therefore taken against the best dense run of "
        "the table, not the one at the same lr. Dev perplexity (x the best dense reference):",
        "",
        "| KD alpha / T / hidden | recovery lr | " + " | ".join(label(k, shapes) for k in keys) + " |",
        "|---|---|" + "---:|" * len(keys),
    ]
    for recipe, lr in rows:
        cells = []
        for key in keys:
            ppl = dev_ppl(key, recipe, lr)
            if ppl is None:
                cells.append("-")
            elif key == "dense" or dense is None:
                cells.append(f"{ppl:.4f}")
            else:
                cells.append(f"{ppl:.4f} ({ppl / dense:.3f})")
        lines.append(f"| {recipe[0]:g} / {recipe[1]:g} / {recipe[2]:g} | {lr:g} | " + " | ".join(cells) + " |")
    bests = []
    for key in (k for k in keys if k != "dense"):
        runs = {(r, lr): p for r, lr in rows if (p := dev_ppl(key, r, lr)) is not None}
        if runs:
            (recipe, lr) = min(runs, key=runs.get)
            bests.append(
                f"- `{key}`: lowest dev perplexity {runs[recipe, lr]:.4f} at lr {lr:g}, KD alpha {recipe[0]:g} "
                f"T {recipe[1]:g} hidden {recipe[2]:g}"
            )
    lines += ["", *bests] if bests else []
    name = f"recovery-lr-w{options.width}"
    title = "Recovery learning rate chosen on a dev split (structured students, KD alpha 0.5)"
    if not set(keys) <= {"dense", "width_b", "tp_b", "gradual_b"}:
        name, title = name + "-shapes", "Recovery learning rate, student shapes and the budget search, on a dev split"
    elif recipes != [(0.5, 2.0, 0.0)]:
        name, title = name + "-kd", "Recovery learning rate and KD recipe chosen on a dev split (structured students)"
    if one_shot_tag(options):
        name += one_shot_tag(options)
        title += f" (one-shot: {one_shot_words(options)})"
    return name, title, "\n".join(lines)


LABELS = {
    "width_a": "hf-compress width-only (activation) + KD",
    "depth_a": "hf-compress depth-only (block influence) + KD",
    "budget_a": "hf-compress budget search (target = width-only's params) + KD",
    "width_b": "hf-compress width-only (activation) + KD",
    "gradual_a": "hf-compress gradual width-only (activation masks over the first 60% of R) + KD",
    "gradual_b": "hf-compress gradual width-only (activation masks over the first 60% of R) + KD",
    "budget_b": "hf-compress budget search (target = Torch-Pruning's params) + KD",
    "tp_b": "Torch-Pruning 1.6.1 ratio 0.5 (GroupMagnitudeImportance p=2, lm_head ignored) + same R steps + KD",
    "budget_a2": "hf-compress budget search (target = Torch-Pruning's params) + KD",
    "tp_a": "Torch-Pruning 1.6.1 ratio 0.375 (GroupMagnitudeImportance p=2, lm_head ignored) + same R steps + KD",
    "scratch_a": "same small architecture from random init, R steps",
    "scratch10_a": "same small architecture from random init, 10 x R steps",
    "scratch_b": "same small architecture from random init, R steps",
    "scratch10_b": "same small architecture from random init, 10 x R steps",
    "scratch10_budget_a2": "the budget search's shape from random init, 10 x R steps",
    "scratch10_budget_b": "the budget search's shape from random init, 10 x R steps",
}


def label(key: str, shapes: dict) -> str:
    if key == "dense":
        return "dense teacher continued R steps"
    if key in LABELS:
        return LABELS[key]
    if key.startswith("scratch10_"):
        return f"the shape of `{key.split('_', 1)[1]}` from random init, 10 x R steps"
    shape = shapes[key]
    return (
        f"hf-compress width-only (activation) + KD, explicit shape (`--extra-shapes`) H{shape.get('hidden_size')}, "
        f"{shape.get('num_key_value_heads')} KV groups, MLP {shape.get('intermediate_size')}"
    )


def best_dense_ppl(tag: str, options) -> tuple[float, float] | None:
    """``(ppl, lr)`` of the best dense reference (teacher continued R steps, seed 0) over every recovery lr run."""
    found = []
    for path in glob.glob(os.path.join(WORK, f"{tag}-R{options.recovery_steps}*.json")):
        dense = json.load(open(path)).get("dense")
        if dense is not None and dense.get("recovery_seed", 0) == 0:
            found.append((dense["ppl"], dense.get("lr", DEFAULT_RECOVERY_LR)))
    return min(found) if found else None


def table(results, options, teacher_ppl, teacher_params, best_dense=None, shapes=None) -> str:
    dense = results.get("dense", {}).get("ppl")
    # a higher recovery lr can make the dense reference itself worse: ratios also against the best one of any lr
    best = best_dense[0] if best_dense and best_dense[0] < (dense or float("inf")) else None
    lines = [
        f"Teacher: byte-level Llama, {options.layers} layers, width {options.width}, MLP {3 * options.width}, "
        f"{options.width // 32} heads of 32, vocab 256, {teacher_params:,} parameters, trained here for "
        f"{options.teacher_steps} steps of batch {options.teacher_batch_size} (lr {options.teacher_lr}); held-out "
        f"perplexity {teacher_ppl:.4f}. Recovery: R = {options.recovery_steps} steps of batch {options.batch_size}, "
        f"lr {options.lr} cosine, KD alpha {options.kd_alpha} T {options.kd_temperature}; dense reference "
        f"(teacher continued R steps): {dense if dense is None else f'{dense:.4f}'}. From scratch uses lr "
        f"{options.teacher_lr}. Calibration: {options.calibration_windows} training windows.",
        "",
        "| level | recipe | params (x teacher) | shape | ppl right after pruning | ppl after recovery | x dense ref |"
        + (f" x best dense ref (lr {best_dense[1]:g}: {best:.4f}) |" if best else ""),
        "|---|---|---|---|---|---|---|" + ("---|" if best else ""),
    ]
    extra = [
        key
        for key in results
        if key not in LABELS and key != "dense" and (key in (shapes or {}) or key.startswith("scratch10_"))
    ]
    for key in [*LABELS, *extra]:
        row = results.get(key)
        if row is None:
            continue
        level = "a (~0.4-0.5x)" if "_a" in key else "b (~0.26x)"
        shape = row.get("shape")
        if isinstance(shape, dict):
            shape = (
                f"L{shape['num_layers']} H{shape['hidden']} heads {shape['num_heads']}/{shape['num_kv_heads']} "
                f"MLP {shape['intermediate']}"
            )
        ratio = row["ppl"] / dense if dense else float("nan")
        one_shot = row.get("one_shot_ppl")
        lines.append(
            f"| {level} | {label(key, shapes or {})} | {row['params']:,} ({row['fraction']:.3f}) | {shape or '-'} | "
            f"{'-' if one_shot is None else f'{one_shot:.3f}'} | {row['ppl']:.4f} | {ratio:.4f} |"
            + (f" {row['ppl'] / best:.4f} |" if best else "")
        )
    lines += [
        "",
        f"One seed (recovery seed {options.recovery_seed}); load average {os.getloadavg()[0]:.1f} when the table was written (speed is not measured "
        "here, so load only changes how long it takes). The issue's protocol: a teacher of width 256 trained 2,000 "
        f"steps and R = 300; this run: width {options.width}, {options.teacher_steps} teacher steps, "
        f"R = {options.recovery_steps}. Every student uses the same batches, learning rate and logit KD; "
        "hf-compress students are made by `shrink_to` (the Trainer-free path of the one-shot callback) and recovered "
        "with `DistillationCallback`; Torch-Pruning's students get the identical recovery. From-scratch runs train "
        "the Torch-Pruning shape of their level (hf-compress's width-only shape where Torch-Pruning did not run) "
        "from random init at the teacher's learning rate; `scratch10_budget_*` train the budget search's shape instead.",
    ]
    searches = [(k, r["search"]) for k, r in results.items() if isinstance(r, dict) and r.get("search")]
    for key, search in searches:
        lines += [
            "",
            f"Budget search of `{key}` (target {search['target_params']:,} parameters; calibration loss "
            f"after {options.search_steps} distillation steps):",
            "",
        ]
        for candidate in search["candidates"]:
            s = candidate["shape"]
            mark = " (chosen)" if candidate == search["chosen"] else ""
            lines.append(
                f"- L{s['num_layers']} H{s['hidden']} heads {s['num_heads']}/{s['num_kv_heads']} MLP "
                f"{s['intermediate']}: {candidate['params']:,} params, loss {candidate['calibration_loss']:.4f}{mark}"
            )
    return "\n".join(lines)
