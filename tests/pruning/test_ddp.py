"""Two-process DDP (accelerate launch --multi_gpu, CPU/gloo): identical masks on both ranks at every mask update."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ddp_pruning.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.multiprocess
def test_two_ranks_hold_identical_masks_at_every_update(tmp_path):
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        str(SCRIPT),
        str(tmp_path),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
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
