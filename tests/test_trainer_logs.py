"""Values that callbacks log reach log_history and the reporters, which the Trainer calls before user callbacks."""

from __future__ import annotations

from transformers import Trainer
from transformers.trainer_callback import PrinterCallback

from conftest import LMDataset, tiny_gpt2, training_args
from hf_compress import L1RegularizationCallback, L1RegularizationConfig, PruningCallback, PruningConfig, add_callbacks


class Reporter(PrinterCallback):
    """A log printer (as TensorBoard/W&B are reporters) registered before the compression callbacks; records what
    on_log saw."""

    def __init__(self):
        self.seen = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.seen.append(dict(logs))


def test_reporters_and_history_see_compression_logs(tmp_path):
    reporter = Reporter()
    pruning = PruningCallback(PruningConfig(target_sparsity=0.5, start=0, end=8, frequency=2))
    l1 = L1RegularizationCallback(L1RegularizationConfig(l1_lambda=1e-4))
    trainer = Trainer(
        model=tiny_gpt2(),
        args=training_args(tmp_path, max_steps=10, logging_steps=5),
        train_dataset=LMDataset(),
        callbacks=[reporter],
    )
    add_callbacks(trainer, pruning, l1)
    trainer.train()
    train_logs = [entry for entry in reporter.seen if "loss" in entry]
    assert train_logs and all("sparsity" in entry and "l1/zero_fraction" in entry for entry in train_logs)
    history = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert all("sparsity_target" in entry and "l1/threshold" in entry for entry in history)
