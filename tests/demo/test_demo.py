"""`hf-compress demo --quick`: the main job end to end, as the README's first command runs it."""

from __future__ import annotations

import json
import subprocess

import pytest


@pytest.fixture(scope="module")
def demo_output(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    result = subprocess.run(
        ["hf-compress", "demo", "--quick", "--output-dir", str(out)], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return out, result


@pytest.fixture(scope="module")
def results(demo_output):
    out, _ = demo_output
    return json.loads((out / "results.json").read_text())


def test_demo_writes_report_plots_and_measured_results(demo_output):
    out, result = demo_output
    report = (out / "report.md").read_text()
    for plot in ("teacher_plateau.png", "sparsity_schedule.png", "losses.png", "hallucination_vs_sparsity.png"):
        assert (out / plot).stat().st_size > 1000
        assert plot in report
    for label in ("teacher at its plateau", "dense reference (teacher + 100 steps)", "one-shot magnitude 50%"):
        assert label in report
    assert "compressed student" in report
    assert "in-distribution perplexity" in report and "held-out phrasings perplexity" in report
    assert "hf-compress demo" in result.stderr  # the progress bar


def test_teacher_stopped_at_its_plateau_by_the_stated_rule(results):
    teacher, settings = results["teacher"], results["settings"]
    assert teacher["plateau_reached"] and teacher["steps"] < settings["teacher_max_steps"]
    losses = [point["in_distribution"] for point in teacher["curve"]]
    assert [point["step"] for point in teacher["curve"]][-1] == teacher["steps"]
    assert all("held_out" in point for point in teacher["curve"])
    # the rule, recomputed from the curve: the last `patience` evaluations each improved the best by <= min_delta
    patience, delta = settings["plateau_patience"], settings["plateau_min_delta"]
    for index in range(len(losses) - patience, len(losses)):
        assert min(losses[:index]) - losses[index] <= delta
    assert min(losses[: len(losses) - patience]) - losses[len(losses) - patience - 1] >= 0  # best so far before
    assert losses[-1] < 0.5 * losses[0]  # it learned


def test_student_and_dense_reference_train_the_same_steps_after_the_teacher(results):
    rows = {row["key"]: row for row in results["rows"]}
    assert list(rows) == ["teacher", "dense_reference", "one_shot", "student", "shrunk"]
    steps = results["settings"]["student_steps"]
    assert rows["dense_reference"]["training_steps"] == rows["student"]["training_steps"] == steps
    assert rows["shrunk"]["training_steps"] == steps
    assert rows["teacher"]["training_steps"] == rows["one_shot"]["training_steps"] == 0
    last_step = [entry["step"] for entry in results["dense_reference_log_history"]][-1]
    assert last_step == [entry["step"] for entry in results["students"]["student"]["log_history"]][-1] == steps


def test_demo_numbers_are_consistent(results):
    rows = {row["key"]: row for row in results["rows"]}
    teacher, dense, one_shot, student = (rows[k] for k in ("teacher", "dense_reference", "one_shot", "student"))
    assert teacher["nonzeros"] > 0.99 * teacher["params"] and dense["nonzeros"] > 0.99 * dense["params"]
    # half of the Linear weights go; embeddings and norms stay dense
    assert student["nonzeros"] < 0.75 * student["params"]
    assert one_shot["nonzeros"] == student["nonzeros"]
    assert student["size_bytes"] < 0.6 * dense["size_bytes"]  # int8 export
    for row in rows.values():
        assert 1.0 <= row["in_distribution_perplexity"] < row["heldout_perplexity"]
        assert 0.0 <= row["hallucination_rate"] <= 1.0 and row["latency_ms"] > 0
    assert results["export_check_max_abs_diff"]["student"] < 1e-3
    history = results["students"]["student"]["log_history"]
    sparsities = [entry["sparsity"] for entry in history if "sparsity" in entry]
    assert sparsities == sorted(sparsities) and sparsities[-1] == pytest.approx(0.5, abs=1e-3)
    assert any("eval_hallucination_rate" in entry for entry in history)


def test_the_shrunk_student_is_physically_smaller(results):
    rows = {row["key"]: row for row in results["rows"]}
    shrunk, dense = rows["shrunk"], rows["dense_reference"]
    assert shrunk["params"] < 0.7 * dense["params"]  # half the KV groups and MLP neurons are gone, not masked
    assert shrunk["nonzeros"] > 0.99 * shrunk["params"]  # a dense smaller model, not a sparse one
    assert shrunk["size_bytes"] < 0.7 * dense["size_bytes"]
    assert results["export_check_max_abs_diff"]["shrunk"] < 1e-3
