"""The skew-KL plugin, installed as a real distribution: math, discovery, and use inside a real Trainer."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

from hf_compress import DistillationCallback, DistillationConfig
from hf_compress.distillation.losses import kl, reverse_kl
from hf_compress_skewkl import skew_kl, skew_reverse_kl


def test_zero_skew_is_plain_kl():
    student, teacher = torch.randn(6, 11), torch.randn(6, 11)
    assert torch.allclose(
        skew_kl(student, teacher, 6, temperature=2.0, skew=0.0), kl(student, teacher, 6, temperature=2.0)
    )
    assert torch.allclose(skew_reverse_kl(student, teacher, 6, skew=0.0), reverse_kl(student, teacher, 6), atol=1e-6)


def test_skew_bounds_the_divergence():
    teacher = torch.tensor([[10.0, 0.0, 0.0]])
    student = torch.tensor([[-30.0, 30.0, 0.0]])  # the student puts almost no mass where the teacher does
    plain = float(skew_kl(student, teacher, 1, skew=0.0))
    skewed = float(skew_kl(student, teacher, 1, skew=0.1))
    assert plain > 30 and skewed < -torch.log(torch.tensor(0.1)).item() + 1e-4
    assert float(skew_kl(teacher, teacher, 1, skew=0.3)) == pytest.approx(0.0, abs=1e-6)


def test_bad_skew():
    with pytest.raises(ValueError, match="loss_kwargs.skew"):
        skew_kl(torch.zeros(1, 3), torch.zeros(1, 3), 1, skew=1.0)


def test_listed_by_the_cli():
    out = subprocess.run(
        [sys.executable, "-m", "hf_compress.cli", "plugins", "list", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    components = {(c["kind"], c["name"]): c for c in json.loads(out)["components"]}
    assert components[("distillation_loss", "skew_kl")]["distribution"] == "hf-compress-skewkl"
    assert components[("distillation_loss", "skew_reverse_kl")]["module"] == "hf_compress_skewkl:skew_reverse_kl"


class Counting(torch.utils.data.Dataset):
    def __len__(self):
        return 32

    def __getitem__(self, i):
        ids = (torch.arange(16) + i) % 64
        return {"input_ids": ids, "labels": ids.clone()}


def test_distills_in_a_trainer(tmp_path):
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=4)
    teacher, student = GPT2LMHeadModel(config), GPT2LMHeadModel(config)
    callback = DistillationCallback(teacher, DistillationConfig(loss="skew_kl", alpha=1.0, loss_kwargs={"skew": 0.1}))
    args = TrainingArguments(
        str(tmp_path),
        max_steps=10,
        per_device_train_batch_size=8,
        learning_rate=3e-3,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        logging_steps=1,
        disable_tqdm=True,
    )
    trainer = Trainer(model=student, args=args, train_dataset=Counting(), callbacks=[callback])
    trainer.train()
    history = [log["distill_loss"] for log in trainer.state.log_history if "distill_loss" in log]
    assert len(history) >= 5
    assert history[-1] < history[0] * 0.7
