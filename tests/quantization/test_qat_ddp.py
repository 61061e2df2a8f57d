"""QATCallback under 2-process DDP (gloo on CPU), launched with ``accelerate launch``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "scripts", "ddp_qat.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.multiprocess
def test_qat_under_two_process_ddp_with_resume(tmp_path):
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--main_process_port", str(free_port()), SCRIPT, str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((tmp_path / "result.json").read_text())
    assert report["world_size"] == 2
    assert report["n_modules"] == 14 and report["keys_unchanged"]
    # every rank ends with the same baked weights, learned scales and activation scales (grads of learned scales are
    # averaged across ranks, observers synchronised), and the learned scales did move
    assert report["ranks_agree"] and report["scales_moved"]
    # resuming the DDP run from its halfway checkpoint lands where the straight run did
    for name, values in report["straight"].items():
        for key, value in values.items():
            assert report["resumed"][name][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (name, key)
