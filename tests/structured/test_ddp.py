"""Two real accelerate processes choose identical structures and end with identical shrunk models."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import launch_two_processes

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ddp_structured.py"


@pytest.mark.multiprocess
def test_two_ranks_choose_the_same_structures(tmp_path):
    launch_two_processes(SCRIPT, tmp_path)
    rank0 = (tmp_path / "rank0.txt").read_text().splitlines()
    rank1 = (tmp_path / "rank1.txt").read_text().splitlines()
    assert "world_size 2" in rank0
    assert rank0 == rank1
    assert any('"num_layers": 2' in line for line in rank0 if line.startswith("gradual shape"))
    # the one-shot run rotated its residual stream on both ranks alike (the weight hashes above agree too)
    assert any("hidden_rotation:" in line for line in rank0 if line.startswith("one_shot messages"))
