"""The demo's Markdown report and PNG plots, built only from the measured ``results`` dict."""

from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402

REFERENCE = "dense_reference"


def _series(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(entry["step"], entry[key]) for entry in history if key in entry and "step" in entry]
    return [p[0] for p in points], [float(p[1]) for p in points]


def _hallucination_key(history: list[dict]) -> str | None:
    for entry in history:
        for key in entry:
            if key.endswith("hallucination_rate"):
                return key
    return None


def _save(figure, output_dir: str, filename: str) -> str:
    figure.tight_layout()
    figure.savefig(os.path.join(output_dir, filename), dpi=110)
    plt.close(figure)
    return filename


def _plot_teacher(results: dict, output_dir: str) -> str:
    teacher, settings = results["teacher"], results["settings"]
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for axis, name, label in (
        (axes[0], "in_distribution", "in-distribution (training sentences)"),
        (axes[1], "held_out", "held-out phrasings"),
    ):
        points = [(p["step"], p[name]) for p in teacher["curve"] if name in p]
        axis.plot([p[0] for p in points], [p[1] for p in points], marker=".")
        axis.axvline(teacher["steps"], color="grey", linestyle="--", label=f"stopped at step {teacher['steps']}")
        axis.set_xlabel("optimizer step")
        axis.set_ylabel("eval loss (nats/token)")
        axis.set_title(label, fontsize=9)
        axis.legend(fontsize=8)
    figure.suptitle(
        f"Teacher eval loss; stop rule: {settings['plateau_patience']} evals in a row improving the in-distribution "
        f"best by <= {settings['plateau_min_delta']} nats",
        fontsize=8,
    )
    return _save(figure, output_dir, "teacher_plateau.png")


def write_plots(results: dict, output_dir: str) -> dict[str, str]:
    """Teacher plateau curve, sparsity schedule, losses after the teacher, hallucination rate against sparsity.

    Returns ``{title: file}``.
    """
    plots = {"Teacher trained to its plateau": _plot_teacher(results, output_dir)}
    key = next(iter(results["students"]))
    history = results["students"][key]["log_history"]

    figure, axis = plt.subplots(figsize=(6, 3.5))
    for name, label in (("sparsity", "measured"), ("sparsity_target", "schedule")):
        steps, values = _series(history, name)
        axis.plot(steps, values, label=label, marker="." if name == "sparsity" else None)
    axis.set_xlabel("optimizer step after the teacher")
    axis.set_ylabel("sparsity")
    axis.set_title("Sparsity over the student's training (cubic schedule)")
    axis.legend()
    plots["Sparsity schedule"] = _save(figure, output_dir, "sparsity_schedule.png")

    figure, axis = plt.subplots(figsize=(6, 3.5))
    reference = results["dense_reference_log_history"]
    for source, series, label, marker in (
        (reference, "loss", "dense reference: training loss", None),
        (reference, "eval_loss", "dense reference: in-distribution eval loss", "s"),
        (history, "loss", "student: training loss (task + distillation)", None),
        (history, "eval_loss", "student: in-distribution eval loss", "o"),
    ):
        steps, values = _series(source, series)
        if steps:
            axis.plot(steps, values, label=label, marker=marker)
    axis.set_yscale("log")
    axis.set_xlabel("optimizer step after the teacher")
    axis.set_title("Dense reference vs student (same steps, batches, lr)")
    axis.legend(fontsize=7)
    plots["Losses"] = _save(figure, output_dir, "losses.png")

    figure, axis = plt.subplots(figsize=(6, 3.5))
    sweep = results["one_shot_sweep"]
    axis.plot(
        [p["sparsity"] for p in sweep],
        [p["hallucination_rate"] for p in sweep],
        marker="s",
        label="one-shot magnitude (no training)",
    )
    rate_key = _hallucination_key(history)
    if rate_key is not None:
        sparsity_by_step = dict(zip(*_series(history, "sparsity")))
        points = []
        for entry in history:
            if rate_key in entry:
                earlier = [s for s in sparsity_by_step if s <= entry["step"]]
                points.append((sparsity_by_step[max(earlier)] if earlier else 0.0, float(entry[rate_key])))
        axis.plot(
            [p[0] for p in points], [p[1] for p in points], marker="o", label="compressed student, during training"
        )
    axis.set_xlabel("sparsity")
    axis.set_ylabel("hallucination rate")
    axis.set_title("Hallucination rate vs sparsity")
    axis.legend(fontsize=8)
    plots["Hallucination rate vs sparsity"] = _save(figure, output_dir, "hallucination_vs_sparsity.png")
    return plots


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.2f} MB"


def results_table(results: dict) -> list[str]:
    """The comparison table; every ratio is to the dense reference (the teacher trained on for as many steps)."""
    rows = results["rows"]
    reference = next(row for row in rows if row["key"] == REFERENCE)
    lines = [
        "| model | training steps after the teacher | in-distribution perplexity | held-out phrasings perplexity | "
        "hallucination rate | parameters | non-zeros | export format | size on disk | CPU latency (ms, median) |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for row in rows:
        ratio = row["in_distribution_perplexity"] / reference["in_distribution_perplexity"]
        lines.append(
            f"| {row['name']} | {row['training_steps']} | {row['in_distribution_perplexity']:.3f} ({ratio:.3f}x) | "
            f"{row['heldout_perplexity']:.1f} | {row['hallucination_rate']:.3f} | {row['params']:,} | "
            f"{row['nonzeros']:,} ({row['nonzeros'] / row['params']:.0%}) | {row['export_format']} | "
            f"{_megabytes(row['size_bytes'])} ({row['size_bytes'] / reference['size_bytes']:.2f}x) | "
            f"{row['latency_ms']:.2f} ({row['latency_ms'] / reference['latency_ms']:.2f}x) |"
        )
    return lines


def _teacher_section(results: dict) -> list[str]:
    teacher, settings = results["teacher"], results["settings"]
    stop = (
        f"It reached the plateau and stopped at step {teacher['steps']}."
        if teacher["plateau_reached"]
        else f"It did NOT reach the plateau within the {settings['teacher_max_steps']}-step cap."
    )
    lines = [
        "## Teacher: trained until its eval loss plateaus",
        "",
        f"Constant learning rate {settings['teacher_lr']:g} after warm-up, batch {settings['batch_size']}. Every "
        f"{settings['teacher_eval_every']} steps the in-distribution eval loss is measured; the teacher stops once "
        f"{settings['plateau_patience']} evaluations in a row each improve its best value by at most "
        f"{settings['plateau_min_delta']} nats (transformers' `EarlyStoppingCallback`), capped at "
        f"{settings['teacher_max_steps']} steps. {stop}",
        "",
        "| step | in-distribution perplexity | held-out phrasings perplexity |",
        "|---:|---:|---:|",
    ]
    for point in teacher["curve"]:
        held_out = f"{math.exp(point['held_out']):.1f}" if "held_out" in point else "-"
        lines.append(f"| {point['step']} | {math.exp(point['in_distribution']):.3f} | {held_out} |")
    return lines + [""]


def write_report(results: dict, plots: dict[str, str], output_dir: str) -> str:
    rows = {row["key"]: row for row in results["rows"]}
    reference = rows[REFERENCE]
    settings = results["settings"]
    load = results.get("load_average", {})
    lines = [
        "# hf-compress demo report",
        "",
        f"Mode: {'quick' if results['quick'] else 'full'}, seed {results['seed']}, wall time "
        f"{results['elapsed_seconds']:.0f} s on {results.get('cpu_count')} CPU cores "
        f"({results.get('torch_threads')} torch threads; load average {load.get('start', float('nan')):.1f} at the "
        f"start, {load.get('end', float('nan')):.1f} at the end). Every number below was measured in this run.",
        "",
        "A teacher LM learns the facts of a synthetic world of countries until its eval loss plateaus. A student is "
        f"then compressed from it with one recipe (gradual pruning + distillation + int8 QAT) over "
        f"{settings['student_steps']} more steps, and compared with the **dense reference**: the same teacher trained "
        "on for the same steps, batches and learning rate (the protocol of `benchmarks/pipelines.py`), so a student "
        "cannot look good merely because its teacher stopped early. One-shot magnitude pruning of the teacher at the "
        "same sparsity, with no training, is the baseline.",
        "",
        "Perplexities: **in-distribution** is on the training sentences (every fact in the phrasings the models "
        "trained on); **held-out phrasings** is on the same facts in one phrasing per attribute that no model trained "
        "on. Held-out phrasings use template words never seen in training, so that perplexity mostly measures how "
        "much probability a model leaves for unseen words: it rises while the teacher memorises the training "
        "phrasings (see the teacher's curve) and favours less-trained or pruned models; it is reported, not a "
        "quality target. Hallucination rate: the share of claims in the models' completions of fact prompts (the "
        "training phrasings' openings, so in-distribution) that the `hallucination` metric (lexical checker) finds "
        "unsupported by or contradicting the facts.",
        "",
        *_teacher_section(results),
        "## Results",
        "",
        "Ratios in brackets are to the dense reference.",
        "",
        *results_table(results),
        "",
    ]
    for key, export_diff in results["export_check_max_abs_diff"].items():
        row = rows[key]
        lines.append(
            f"- **{row['name']}**: in-distribution perplexity "
            f"{row['in_distribution_perplexity'] / reference['in_distribution_perplexity']:.3f}x the dense "
            f"reference's, hallucination rate {row['hallucination_rate']:.3f} vs {reference['hallucination_rate']:.3f}, "
            f"{row['nonzeros'] / row['params']:.0%} non-zeros, {row['size_bytes'] / reference['size_bytes']:.2f}x the "
            "size on disk"
            + (
                f"; its export was reloaded and checked: max abs diff {export_diff:.2e}."
                if export_diff is not None
                else "."
            )
        )
    lines += [
        "",
        "Latency is the median forward pass over a batch of 16 fact prompts of the model in memory, on this CPU, "
        "measured in alternating rounds. Dense CPU kernels do not skip zeros, so unstructured sparsity alone does not "
        "make the forward pass faster here; the size on disk shows what int8 storage saves. (compressed-tensors 0.20 "
        "ships no bitmask / 2:4 sparse compressor, so the zeros are stored as int8 zeros; the sparsity is kept "
        "exactly.)",
    ]
    if results.get("stage_seconds"):
        stage_text = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in results["stage_seconds"].items())
        lines.append(f"Time per stage: {stage_text}.")
    lines += [
        "",
        "## One-shot magnitude pruning sweep (no training)",
        "",
        "| sparsity | hallucination rate |",
        "|---:|---:|",
    ]
    lines += [f"| {p['sparsity']:.2f} | {p['hallucination_rate']:.3f} |" for p in results["one_shot_sweep"]]
    for key, student in results["students"].items():
        lines += ["", f"## Recipe: {rows[key]['name']}", "", "```yaml"]
        lines += [yaml.safe_dump(student["recipe"], sort_keys=False).rstrip(), "```"]
    lines.append("")
    for title, filename in plots.items():
        lines += [f"## {title}", "", f"![{title}]({filename})", ""]
    path = os.path.join(output_dir, "report.md")
    with open(path, "w") as handle:
        handle.write("\n".join(lines))
    return path
