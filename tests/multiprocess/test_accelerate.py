"""Real `accelerate launch` runs on CPU (gloo): 2 processes, and 2 "machines" on loopback.

Every rank must hold identical masks at every mask update, and the final model must equal the one-process run with
the same global batch (within float tolerance).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import free_port

pytestmark = pytest.mark.multiprocess

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "recipe_run.py"
RECIPE = {
    "pruning": {
        "target_sparsity": 0.5,
        "schedule": "cubic",
        "start": 0,
        "end": 8,
        "frequency": 2,
        "criterion": "movement",
    },
    "distillation": {"loss": "kl", "temperature": 2.0, "alpha": 0.5},
    "quantization": {"weight_bits": 8, "granularity": "per_channel", "start": 6},
}
TIMEOUT = 240


def env() -> dict:
    values = dict(os.environ)
    values.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return values


def launch(extra: list[str], out: Path, per_device_batch: int) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *extra,
        str(SCRIPT),
        "--out",
        str(out),
        "--recipe",
        json.dumps(RECIPE),
        "--per_device_batch",
        str(per_device_batch),
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env())


def finish(process: subprocess.Popen) -> str:
    try:
        output, _ = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"accelerate launch timed out after {TIMEOUT}s:\n{output[-4000:]}")
    assert process.returncode == 0, output[-6000:]
    return output


@pytest.fixture(scope="module")
def single_process_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), "--recipe", json.dumps(RECIPE), "--per_device_batch", "8"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env(),
    )
    assert result.returncode == 0, result.stderr[-6000:]
    return out


def assert_same_masks_and_final_model(out: Path, reference: Path) -> None:
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["world_size"] == 2
    assert len(ranks[0]["updates"]) >= 4, "masks were updated at several steps"
    assert ranks[0]["updates"] == ranks[1]["updates"], "ranks disagree on masks at some update"
    single = json.loads((reference / "rank0.json").read_text())
    assert [u["step"] for u in single["updates"]] == [u["step"] for u in ranks[0]["updates"]]
    final, expected = load_file(out / "final.safetensors"), load_file(reference / "final.safetensors")
    assert final.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(final[key], expected[key], rtol=2e-4, atol=2e-5, msg=key)


def test_two_processes_match_one_process(tmp_path, single_process_run):
    process = launch(["--multi_gpu", "--num_processes", "2", "--main_process_port", str(free_port())], tmp_path, 4)
    finish(process)
    assert_same_masks_and_final_model(tmp_path, single_process_run)


def test_two_machines_on_loopback(tmp_path, single_process_run):
    port = str(free_port())
    common = [
        "--multi_gpu",
        "--num_machines",
        "2",
        "--num_processes",
        "2",
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        port,
        "--rdzv_backend",
        "static",
    ]
    machines = [launch([*common, "--machine_rank", str(rank)], tmp_path, 4) for rank in (0, 1)]
    for process in machines:
        finish(process)
    assert_same_masks_and_final_model(tmp_path, single_process_run)


def test_failed_rendezvous_shows_the_error_instead_of_hanging(tmp_path):
    # machine 1 alone: nobody serves the rendezvous; the store timeout turns it into accelerate/torch's error
    port = str(free_port())
    process = launch(
        [
            "--multi_gpu",
            "--num_machines",
            "2",
            "--num_processes",
            "2",
            "--machine_rank",
            "1",
            "--main_process_ip",
            "127.0.0.1",
            "--main_process_port",
            port,
            "--rdzv_backend",
            "static",
            "--rdzv_conf",
            "timeout=10",
        ],
        tmp_path,
        4,
    )
    try:
        output, _ = process.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("a failed rendezvous hung instead of failing")
    assert process.returncode != 0
    assert "127.0.0.1" in output and (
        "timed out" in output or "TimeoutError" in output or "DistNetworkError" in output
    )
