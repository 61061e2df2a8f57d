"""PruningCallback under DeepSpeed ZeRO-2 and ZeRO-3 through the Trainer: 2 CPU processes (gloo), one tiny Llama.

For every case (criterion x pattern x scope, gradual and one-shot; with L1, distillation or QAT beside pruning) and at every mask update: the masks are identical
on both ranks and equal to the DDP run's, every pruned weight is zero in the optimizer's fp32 master and in the
module; the final model equals the DDP run with the same global batch; the target sparsity is reached; resuming
from the step-4 ZeRO checkpoint ends bit-exactly where the uninterrupted run did. What ZeRO-3 cannot do is refused
at train begin. Masks cost 1 bit per weight, and under ZeRO-3 each rank holds only its partition's half of every mask. ZeRO-3 runs through ``accelerate launch --config_file examples/accelerate/deepspeed_zero3.yaml``,
ZeRO-2 through ``TrainingArguments(deepspeed="examples/accelerate/deepspeed_zero2.json")`` under torchrun.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import free_port

pytest.importorskip("deepspeed")
pytestmark = pytest.mark.multiprocess

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "scripts" / "deepspeed_pruning.py"
EXAMPLES = ROOT / "examples" / "accelerate"
TIMEOUT = 480  # the first DeepSpeed start compiles its CPU communication op (about 45 s)
ALL_CASES = [
    "magnitude_unstructured_layer",
    "magnitude_2:4_global",
    "magnitude_row_global",
    "magnitude_head_layer",
    "sparsegpt_unstructured_global",
    "one_shot_magnitude",
    "one_shot_sparsegpt",
    "l1_and_magnitude",
    "distillation_and_magnitude",
    "qat_and_magnitude",
]
ZERO3_CASES = [case for case in ALL_CASES if case not in ("one_shot_sparsegpt", "qat_and_magnitude")]  # refused
ZERO2_CASES = ["magnitude_2:4_global", "one_shot_sparsegpt", "l1_and_magnitude", "qat_and_magnitude"]


def run(launcher: list[str], out: Path, stage: int, cases: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", *launcher, str(SCRIPT), str(out), str(stage), ",".join(cases)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"{' '.join(launcher[:1])} timed out after {TIMEOUT}s:\n{str(error.stdout)[-3000:]}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["world_size"] == 2
    assert ranks[0]["cases"] == ranks[1]["cases"], "ranks disagree (masks or probes) at some mask update"
    return ranks[0]


def torchrun() -> list[str]:
    return ["torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]


def accelerate(config: str) -> list[str]:
    return [
        "accelerate.commands.launch",
        "--config_file",
        str(EXAMPLES / config),
        "--main_process_port",
        str(free_port()),
    ]


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    return out, run(torchrun(), out, 0, ALL_CASES)


def check_against_ddp(
    out: Path, result: dict, reference: tuple[Path, dict], cases: list[str], mask_share: float = 1.0
) -> None:
    """``mask_share``: the part of every whole mask a rank holds (ZeRO-3 at 2 ranks: its partition's half), at 1 bit
    per weight."""
    ddp_out, ddp_result = reference
    for case in cases:
        got, expected = result["cases"][case], ddp_result["cases"][case]
        assert got["mask_bytes_held"] == pytest.approx(mask_share / 8, rel=0.05), case
        assert got["engine"] == "DeepSpeedEngine", case
        assert len(got["updates"]) >= 1, case
        assert [u["step"] for u in got["updates"]] == [u["step"] for u in expected["updates"]], case
        for update, ddp_update in zip(got["updates"], expected["updates"]):
            assert update["master_zero"], f"{case}: a pruned weight is non-zero in the fp32 master at {update}"
            assert update["module_zero"], f"{case}: a pruned weight is non-zero in the module at {update}"
            assert update["masks"] == ddp_update["masks"], f"{case}: masks differ from DDP's at step {update['step']}"
        for update in got["resumed_updates"]:
            assert update in got["updates"], f"{case}: the resumed run's masks differ at step {update['step']}"
            assert update["master_zero"] and update["module_zero"], case
        assert got["final_sparsity"] == pytest.approx(0.5, abs=0.02), case
        final, ddp_final = (
            load_file(out / f"{case}.final.safetensors"),
            load_file(ddp_out / f"{case}.final.safetensors"),
        )
        resumed = load_file(out / f"{case}.resumed.safetensors")
        assert final.keys() == ddp_final.keys()
        for key in final:
            torch.testing.assert_close(final[key], ddp_final[key], rtol=1e-5, atol=1e-6, msg=f"{case} {key}")
            assert torch.equal(resumed[key], final[key]), f"{case}: resume from the ZeRO checkpoint differs at {key}"


def test_zero3_through_the_accelerate_example_config(tmp_path, ddp):
    result = run(accelerate("deepspeed_zero3.yaml"), tmp_path, -3, ZERO3_CASES)
    check_against_ddp(tmp_path, result, ddp, ZERO3_CASES, mask_share=0.5)
    refusals = result["refusals"]
    assert "method='sparsegpt'" in refusals["one_shot_sparsegpt"] and "ZeRO-3" in refusals["one_shot_sparsegpt"]
    assert "criterion='movement'" in refusals["movement"] and "DeepSpeed" in refusals["movement"]
    assert "QATCallback" in refusals["qat"] and "ZeRO-3" in refusals["qat"]
    hallucination, expected = result["hallucination"], ddp[1]["hallucination"]
    assert len(hallucination["evaluations"]) == 2 and len(hallucination["generations"]) == 3
    assert hallucination["generations"] == expected["generations"]
    for got, want in zip(hallucination["evaluations"], expected["evaluations"]):
        assert got.keys() == want.keys() and any("hallucination" in key for key in got)
        for key in got:
            assert got[key] == pytest.approx(want[key], abs=1e-6), key


def test_zero2_through_training_arguments(tmp_path, ddp):
    result = run(torchrun(), tmp_path, 2, ZERO2_CASES)
    check_against_ddp(tmp_path, result, ddp, ZERO2_CASES)


def test_example_configs_differ_only_in_the_stage():
    zero2, zero3 = (yaml.safe_load((EXAMPLES / f"deepspeed_zero{s}.yaml").read_text()) for s in (2, 3))
    assert zero2["distributed_type"] == zero3["distributed_type"] == "DEEPSPEED"
    assert zero2["deepspeed_config"].pop("deepspeed_config_file").endswith("deepspeed_zero2.json")
    assert zero3["deepspeed_config"].pop("deepspeed_config_file").endswith("deepspeed_zero3.json")
    assert zero2 == zero3
    for stage in (2, 3):
        config = json.loads((EXAMPLES / f"deepspeed_zero{stage}.json").read_text())
        assert config["zero_optimization"]["stage"] == stage
