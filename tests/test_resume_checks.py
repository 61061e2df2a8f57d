"""Resume is exact or refused: crash inside on_save, missing and damaged state files, changed configs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import Trainer

from conftest import LMDataset, tiny_gpt2, training_args
from hf_compress import PruningCallback, PruningConfig, QATCallback, QATConfig

SCRIPTS = Path(__file__).parent / "scripts"
sys.path.insert(0, str(SCRIPTS))
from crash_in_on_save import PRUNING, QAT, TRAINING  # noqa: E402


def run(output_dir, pruning: dict | None = None, qat: dict | None = None, resume=None):
    model = tiny_gpt2(0)
    callbacks = [PruningCallback(PruningConfig(**(pruning or PRUNING))), QATCallback(QATConfig(**(qat or QAT)))]
    trainer = Trainer(
        model=model, args=training_args(output_dir, **TRAINING), train_dataset=LMDataset(), callbacks=callbacks
    )
    trainer.train(resume_from_checkpoint=None if resume is None else str(resume))
    return model


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("straight")
    model = run(folder)
    return folder, {k: v.clone() for k, v in model.state_dict().items()}


def run_script(output_dir, mode: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(SCRIPTS / "crash_in_on_save.py"), str(output_dir), mode]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def test_a_crash_inside_on_save_resumes_exactly_from_the_staged_state(tmp_path):
    from safetensors.torch import load_file

    assert run_script(tmp_path / "straight", "straight").returncode == 0
    result = run_script(tmp_path / "crashed", "kill")
    assert result.returncode == 17, result.stderr[-3000:]
    checkpoint = tmp_path / "crashed" / "checkpoint-10"
    assert (checkpoint / "trainer_state.json").exists()
    assert not (checkpoint / "hf_compress_pruning.json").exists()  # the crash window: the Trainer wrote, we did not
    assert not (checkpoint / "hf_compress_qat.json").exists()

    result = run_script(tmp_path / "crashed", "resume")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "using the copy staged at" in result.stderr
    expected, resumed = (
        load_file(tmp_path / "straight" / "final.safetensors"),
        load_file(tmp_path / "crashed" / "final.safetensors"),
    )
    for key, value in resumed.items():
        assert torch.equal(value, expected[key]), key
    assert not (tmp_path / "crashed" / ".hf_compress_pending").exists()


def copy_checkpoint(uninterrupted, tmp_path) -> Path:
    folder, _ = uninterrupted
    checkpoint = tmp_path / "checkpoint-10"
    shutil.copytree(folder / "checkpoint-10", checkpoint)
    return checkpoint


def test_the_staging_folder_is_gone_after_a_normal_run(uninterrupted):
    folder, _ = uninterrupted
    assert (folder / "checkpoint-10" / "hf_compress_pruning.json").exists()
    assert not (folder / ".hf_compress_pending").exists()


def test_a_checkpoint_without_pruning_state_is_refused_naming_folder_and_file(tmp_path, uninterrupted):
    checkpoint = copy_checkpoint(uninterrupted, tmp_path)
    os.remove(checkpoint / "hf_compress_pruning.json")
    with pytest.raises(ValueError, match=r"cannot resume pruning from .*checkpoint-10.*hf_compress_pruning\.json"):
        run(tmp_path, resume=checkpoint)


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncate_tensors", r"hf_compress_pruning\.safetensors: damaged"),
        ("remove_tensors", r"hf_compress_pruning\.safetensors: missing"),
        ("bad_json", r"hf_compress_pruning\.json: damaged"),
    ],
)
def test_damaged_state_files_are_refused_naming_the_file(tmp_path, uninterrupted, damage, message):
    checkpoint = copy_checkpoint(uninterrupted, tmp_path)
    tensors = checkpoint / "hf_compress_pruning.safetensors"
    if damage == "truncate_tensors":
        data = tensors.read_bytes()
        tensors.write_bytes(data[: len(data) // 2])
    elif damage == "remove_tensors":
        os.remove(tensors)
    else:
        (checkpoint / "hf_compress_pruning.json").write_text('{"config": {')
    with pytest.raises(ValueError, match=message):
        run(tmp_path, resume=checkpoint)


@pytest.mark.parametrize(
    "pruning, qat, field",
    [
        ({**PRUNING, "target_sparsity": 0.2}, None, r"target_sparsity: checkpoint 0\.5, this run 0\.2"),
        ({**PRUNING, "pattern": "2:4", "target_sparsity": None}, None, r"pattern: checkpoint 'unstructured', this "),
        ({**PRUNING, "criterion": "magnitude"}, None, r"criterion: checkpoint 'movement', this run 'magnitude'"),
        ({**PRUNING, "schedule": "linear"}, None, r"schedule: checkpoint 'cubic', this run 'linear'"),
        ({**PRUNING, "targets": [r"\.mlp\."]}, None, r"targets: checkpoint None"),
        (None, {**QAT, "weight_bits": 8}, r"QAT config differs.*weight_bits: checkpoint 4, this run 8"),
    ],
)
def test_a_changed_config_is_refused_naming_field_and_values(tmp_path, uninterrupted, pruning, qat, field):
    checkpoint = copy_checkpoint(uninterrupted, tmp_path)
    with pytest.raises(ValueError, match=field):
        run(tmp_path, pruning=pruning, qat=qat, resume=checkpoint)


def test_a_config_change_on_purpose_is_allowed_by_the_documented_switch(tmp_path, uninterrupted, monkeypatch):
    checkpoint = copy_checkpoint(uninterrupted, tmp_path)
    monkeypatch.setenv("HF_COMPRESS_ALLOW_RESUME_CONFIG_CHANGE", "1")
    model = run(tmp_path, pruning={**PRUNING, "target_sparsity": 0.7}, resume=checkpoint)
    weight = model.transformer.h[0].mlp.c_fc.weight
    assert float((weight == 0).float().mean()) == pytest.approx(0.7, abs=0.01)


def test_state_files_are_written_atomically(tmp_path, uninterrupted):
    folder, _ = uninterrupted
    names = sorted(os.listdir(folder / "checkpoint-10"))
    assert not [name for name in names if ".tmp-" in name]
    meta = json.loads((folder / "checkpoint-10" / "hf_compress_pruning.json").read_text())
    assert meta["saved_tensors"] and all(isinstance(name, str) for name in meta["saved_tensors"])


def test_distillation_config_is_checked_on_resume(tmp_path):
    from conftest import tiny_llama
    from hf_compress import DistillationCallback, DistillationConfig

    def run_distillation(alpha, resume=None):
        trainer = Trainer(
            model=tiny_llama(0),
            args=training_args(tmp_path, **TRAINING),
            train_dataset=LMDataset(),
            callbacks=[DistillationCallback(tiny_llama(1), DistillationConfig(alpha=alpha))],
        )
        trainer.train(resume_from_checkpoint=resume)

    run_distillation(0.5)
    checkpoint = tmp_path / "checkpoint-10"
    assert json.loads((checkpoint / "distillation_projections.json").read_text())["config"]["alpha"] == 0.5
    with pytest.raises(ValueError, match=r"distillation config differs.*alpha: checkpoint 0\.5, this run 0\.9"):
        run_distillation(0.9, resume=str(checkpoint))
    os.remove(checkpoint / "distillation_projections.json")
    with pytest.raises(ValueError, match=r"cannot resume distillation from .*distillation_projections\.json"):
        run_distillation(0.5, resume=str(checkpoint))
