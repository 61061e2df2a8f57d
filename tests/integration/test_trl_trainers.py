"""The callbacks inside TRL's DPOTrainer, a Trainer subclass that builds its own loss from the logits."""

from __future__ import annotations

import pytest
import torch

from conftest import VOCAB, on_grid, tiny_llama
from hf_compress import (
    DistillationCallback,
    DistillationConfig,
    PruningCallback,
    PruningConfig,
    QATCallback,
    QATConfig,
    add_callbacks,
)
from hf_compress.targets import weight_out_in

trl = pytest.importorskip("trl")


def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel({f"t{i}": i for i in range(VOCAB)}, unk_token="t0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="t0", eos_token="t1", unk_token="t0")


def preference_data(n=16, seed=0):
    from datasets import Dataset

    generator = torch.Generator().manual_seed(seed)

    def words(length):
        return " ".join(f"t{int(i)}" for i in torch.randint(2, VOCAB, (length,), generator=generator))

    return Dataset.from_dict(
        {
            "prompt": [words(4) for _ in range(n)],
            "chosen": [words(3) for _ in range(n)],
            "rejected": [words(3) for _ in range(n)],
        }
    )


def dpo_trainer(tmp_path, model, max_steps=6):
    args = trl.DPOConfig(
        output_dir=str(tmp_path),
        max_steps=max_steps,
        logging_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        save_strategy="no",
        max_length=16,
        bf16=False,  # TRL defaults to bf16; accelerate's state keeps that mixed precision for later Trainers on 4.57
    )
    reference = tiny_llama(seed=0).eval()  # given, so TRL does not load one by name
    return trl.DPOTrainer(
        model=model, ref_model=reference, args=args, train_dataset=preference_data(), processing_class=word_tokenizer()
    )


def test_pruning_and_qat_inside_dpo(tmp_path):
    model = tiny_llama(seed=0)
    trainer = dpo_trainer(tmp_path, model)
    pruning = PruningCallback(PruningConfig(target_sparsity=0.5, start=0, end=4, frequency=2))
    qat = QATCallback(QATConfig(weight_bits=8))
    add_callbacks(trainer, pruning, qat)
    trainer.train()
    entries = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert entries and all("sparsity" in entry for entry in entries)
    assert entries[-1]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    for name, record in qat.modules.items():
        module = record.module
        assert on_grid(module), name
        weight = weight_out_in(module.weight.detach(), module)
        assert (weight[~pruning.masks[name]] == 0).all(), name


def test_distillation_in_dpo_fails_loudly_instead_of_doing_nothing(tmp_path):
    trainer = dpo_trainer(tmp_path, tiny_llama(seed=0), max_steps=2)
    trainer.add_callback(DistillationCallback(tiny_llama(seed=1), DistillationConfig(alpha=0.5)))
    with pytest.raises(ValueError, match="DistillationCallback"):  # DPO builds its own loss from the logits
        trainer.train()
