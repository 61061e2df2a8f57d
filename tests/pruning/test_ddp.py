"""Two-process DDP (accelerate launch --multi_gpu, CPU/gloo): identical masks on both ranks at every mask update."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import launch_two_processes

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ddp_pruning.py"


@pytest.mark.multiprocess
def test_two_ranks_hold_identical_masks_at_every_update(tmp_path):
    launch_two_processes(SCRIPT, tmp_path)
    rank0 = (tmp_path / "rank0.txt").read_text().splitlines()
    rank1 = (tmp_path / "rank1.txt").read_text().splitlines()
    updates = [line for line in rank0 if line.startswith("update ")]
    assert [line.split()[1] for line in updates] == ["3", "6", "9", "12"]  # step 0 is before the first step
    assert rank0 == rank1
    assert "world_size 2" in rank0
    assert "divergences 0" in rank0  # the all-reduce made them agree; no broadcast was needed
    final = float(next(line for line in rank0 if line.startswith("final_sparsity")).split()[1])
    assert abs(final - 0.6) <= 0.001
    assert "fsdp_shard_mask ok" in rank0
    assert "fsdp_partitioned_masks ok" in rank0
    assert any(line.startswith("one_shot masks ") and line.endswith(" 2:4 True layers 14") for line in rank0)
