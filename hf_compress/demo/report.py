"""The demo's Markdown report and PNG plots, built only from the measured ``results`` dict."""

from __future__ import annotations

import os


def _series(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(entry["step"], entry[key]) for entry in history if key in entry and "step" in entry]
    return [p[0] for p in points], [float(p[1]) for p in points]


def _hallucination_key(history: list[dict]) -> str | None:
    for entry in history:
        for key in entry:
            if key.endswith("hallucination_rate"):
                return key
    return None


def write_plots(results: dict, output_dir: str) -> dict[str, str]:
    """Sparsity schedule over steps, losses, and hallucination rate against sparsity. Returns ``{title: file}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = results["student_log_history"]
    plots = {}

    figure, axis = plt.subplots(figsize=(6, 3.5))
    for key, label in (("sparsity", "measured"), ("sparsity_target", "schedule")):
        steps, values = _series(history, key)
        axis.plot(steps, values, label=label, marker="." if key == "sparsity" else None)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("sparsity")
    axis.set_title("Sparsity over training (cubic schedule)")
    axis.legend()
    figure.tight_layout()
    plots["Sparsity schedule"] = "sparsity_schedule.png"
    figure.savefig(os.path.join(output_dir, plots["Sparsity schedule"]), dpi=110)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(6, 3.5))
    steps, values = _series(results["teacher_log_history"], "loss")
    axis.plot(steps, values, label="teacher training loss", alpha=0.7)
    for key in ("loss", "task_loss", "distill_loss", "eval_loss"):
        steps, values = _series(history, key)
        if steps:
            axis.plot(steps, values, label=f"student {key}", marker="o" if key == "eval_loss" else None)
    axis.set_yscale("log")
    axis.set_xlabel("optimizer step")
    axis.set_title("Losses")
    axis.legend(fontsize=8)
    figure.tight_layout()
    plots["Losses"] = "losses.png"
    figure.savefig(os.path.join(output_dir, plots["Losses"]), dpi=110)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(6, 3.5))
    sweep = results["one_shot_sweep"]
    axis.plot(
        [p["sparsity"] for p in sweep],
        [p["hallucination_rate"] for p in sweep],
        marker="s",
        label="one-shot magnitude (no training)",
    )
    key = _hallucination_key(history)
    if key is not None:
        sparsity_by_step = dict(zip(*_series(history, "sparsity")))
        points = []
        for entry in history:
            if key in entry:
                earlier = [s for s in sparsity_by_step if s <= entry["step"]]
                points.append((sparsity_by_step[max(earlier)] if earlier else 0.0, float(entry[key])))
        axis.plot(
            [p[0] for p in points], [p[1] for p in points], marker="o", label="compressed student, during training"
        )
    axis.set_xlabel("sparsity")
    axis.set_ylabel("hallucination rate")
    axis.set_title("Hallucination rate vs sparsity")
    axis.legend(fontsize=8)
    figure.tight_layout()
    plots["Hallucination rate vs sparsity"] = "hallucination_vs_sparsity.png"
    figure.savefig(os.path.join(output_dir, plots["Hallucination rate vs sparsity"]), dpi=110)
    plt.close(figure)
    return plots


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.2f} MB"


def write_report(results: dict, plots: dict[str, str], output_dir: str) -> str:
    rows = results["rows"]
    teacher = rows[0]
    lines = [
        "# hf-compress demo report",
        "",
        f"Mode: {'quick' if results['quick'] else 'full'}, seed {results['seed']}, wall time "
        f"{results['elapsed_seconds']:.0f} s. Every number below was measured in this run.",
        "",
        "A teacher LM learns the facts of a synthetic world of countries; a student is compressed from it with one "
        "recipe (gradual pruning + distillation + int8 QAT) and compared with one-shot magnitude pruning of the "
        "teacher at the same sparsity. Hallucination rate: the share of claims in the models' completions of fact "
        "prompts that the `hallucination` metric (lexical checker) finds unsupported by or contradicting the facts.",
        "",
        "| model | eval perplexity | hallucination rate | parameters | non-zeros | export format | size on disk | "
        "CPU latency (ms, median) |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['name']} | {row['perplexity']:.3f} | {row['hallucination_rate']:.3f} | {row['params']:,} | "
            f"{row['nonzeros']:,} ({row['nonzeros'] / row['params']:.0%}) | {row['export_format']} | "
            f"{_megabytes(row['size_bytes'])} ({row['size_bytes'] / teacher['size_bytes']:.2f}x) | "
            f"{row['latency_ms']:.2f} ({row['latency_ms'] / teacher['latency_ms']:.2f}x) |"
        )
    diff = results.get("export_check_max_abs_diff")
    lines += [
        "",
        "Latency is the median forward pass over a batch of 16 fact prompts of the model in memory, on this CPU. "
        "Dense CPU kernels do not skip zeros, so sparsity alone does not make the forward pass faster here; the "
        "size on disk shows what int8 storage saves. (compressed-tensors 0.20 ships no bitmask / 2:4 sparse compressor, "
        "so the zeros are stored as int8 zeros; the sparsity is kept exactly.)",
    ]
    if diff is not None:
        lines.append(
            f"The compressed-tensors export was reloaded and checked against the student: max abs diff {diff:.2e}."
        )
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
    lines += ["", "## Recipe", "", "```yaml"]
    import yaml

    lines += [yaml.safe_dump(results["recipe"], sort_keys=False).rstrip(), "```", ""]
    for title, filename in plots.items():
        lines += [f"## {title}", "", f"![{title}]({filename})", ""]
    path = os.path.join(output_dir, "report.md")
    with open(path, "w") as handle:
        handle.write("\n".join(lines))
    return path
