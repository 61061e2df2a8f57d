"""`hf-compress demo --quick`: the main job end to end, as the README's first command runs it."""

from __future__ import annotations

import json
import subprocess

import pytest


@pytest.fixture(scope="module")
def demo_output(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    result = subprocess.run(
        ["hf-compress", "demo", "--quick", "--output-dir", str(out)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return out, result


def test_demo_writes_report_plots_and_measured_results(demo_output):
    out, result = demo_output
    report = (out / "report.md").read_text()
    for plot in ("sparsity_schedule.png", "losses.png", "hallucination_vs_sparsity.png"):
        assert (out / plot).stat().st_size > 1000
        assert plot in report
    assert "| teacher (dense fp32) |" in report and "compressed student" in report
    assert "hf-compress demo" in result.stderr  # the progress bar


def test_demo_numbers_are_consistent(demo_output):
    out, _ = demo_output
    results = json.loads((out / "results.json").read_text())
    teacher, one_shot, student = results["rows"]
    assert teacher["nonzeros"] > 0.99 * teacher["params"]
    # half of the Linear weights go; embeddings and norms stay dense
    assert student["nonzeros"] < 0.75 * student["params"]
    assert one_shot["nonzeros"] == student["nonzeros"]
    assert student["size_bytes"] < 0.6 * teacher["size_bytes"]  # int8 export
    for row in results["rows"]:
        assert 1.0 <= row["perplexity"] < 200 and 0.0 <= row["hallucination_rate"] <= 1.0 and row["latency_ms"] > 0
    assert results["export_check_max_abs_diff"] is not None and results["export_check_max_abs_diff"] < 1e-3
    sparsities = [entry["sparsity"] for entry in results["student_log_history"] if "sparsity" in entry]
    assert sparsities == sorted(sparsities) and sparsities[-1] == pytest.approx(0.5, abs=1e-3)
    assert any("eval_hallucination_rate" in entry for entry in results["student_log_history"])
