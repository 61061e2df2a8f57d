"""Callback state travels with a checkpoint wherever it is resumed from."""

from __future__ import annotations

import shutil

import pytest
import torch
from transformers import Trainer

from conftest import LMDataset, tiny_llama, training_args
from hf_compress import PruningCallback, PruningConfig


def pruning():
    return PruningCallback(PruningConfig(target_sparsity=0.5, criterion="movement", start=0, end=16, frequency=2))


def test_resume_from_a_checkpoint_moved_outside_output_dir(tmp_path):
    straight = tiny_llama()
    args = training_args(tmp_path / "a", max_steps=20, save_strategy="steps", save_steps=10)
    Trainer(model=straight, args=args, train_dataset=LMDataset(), callbacks=[pruning()]).train()
    moved = tmp_path / "elsewhere" / "ckpt"
    shutil.copytree(tmp_path / "a" / "checkpoint-10", moved)

    resumed = tiny_llama()
    # callbacks are not shown trainer.train's argument: name the folder in TrainingArguments too (as run_clm does)
    args = training_args(
        tmp_path / "b", max_steps=20, save_strategy="steps", save_steps=10, resume_from_checkpoint=str(moved)
    )
    Trainer(model=resumed, args=args, train_dataset=LMDataset(), callbacks=[pruning()]).train(
        resume_from_checkpoint=str(moved)
    )
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_resume_without_a_findable_checkpoint_is_an_error(tmp_path):
    from types import SimpleNamespace

    from hf_compress.checkpoint_state import resume_folder

    args = SimpleNamespace(output_dir=str(tmp_path), resume_from_checkpoint=None)
    assert resume_folder(args, SimpleNamespace(global_step=0)) is None
    with pytest.raises(ValueError, match="resume_from_checkpoint"):
        resume_folder(args, SimpleNamespace(global_step=7))


def test_resume_from_an_unnamed_folder_outside_output_dir_fails_before_training(tmp_path):
    Trainer(
        model=tiny_llama(),
        args=training_args(tmp_path / "a", max_steps=10, save_strategy="steps", save_steps=10),
        train_dataset=LMDataset(),
        callbacks=[pruning()],
    ).train()
    moved = tmp_path / "elsewhere" / "ckpt"
    shutil.copytree(tmp_path / "a" / "checkpoint-10", moved)
    model = tiny_llama()
    args = training_args(tmp_path / "b", max_steps=20, save_strategy="steps", save_steps=10)
    trainer = Trainer(model=model, args=args, train_dataset=LMDataset(), callbacks=[pruning()])
    with pytest.raises(ValueError, match="TrainingArguments\\(resume_from_checkpoint=PATH\\)"):
        trainer.train(resume_from_checkpoint=str(moved))
    assert not (tmp_path / "b" / "checkpoint-20").exists()


def test_resume_finds_the_checkpoint_through_get_last_checkpoint(tmp_path):
    from types import SimpleNamespace

    from hf_compress.trainer import resume_folder

    folder = tmp_path / "checkpoint-7"
    folder.mkdir()
    (folder / "trainer_state.json").write_text('{"global_step": 7}')
    args = SimpleNamespace(output_dir=str(tmp_path), resume_from_checkpoint=None)
    assert resume_folder(args, SimpleNamespace(global_step=7)) == str(folder)
    (folder / "trainer_state.json").write_text('{"global_step": 5}')
    with pytest.raises(ValueError, match="step 7"):
        resume_folder(args, SimpleNamespace(global_step=7))
