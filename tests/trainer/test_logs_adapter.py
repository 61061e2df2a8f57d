"""The two facts about transformers that hf_compress.trainer.logs relies on; each test fails the day one changes."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback

from conftest import LMDataset, tiny_gpt2, training_args
from hf_compress import PruningCallback, PruningConfig, add_callbacks
from hf_compress.trainer import logs as trainer_logs


class HistoryProbe(TrainerCallback):
    def __init__(self):
        self.pairs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.pairs.append((dict(logs), dict(state.log_history[-1]), state.global_step))


def test_trainer_appends_the_history_entry_right_before_on_log(tmp_path):
    probe = HistoryProbe()
    trainer = Trainer(
        model=tiny_gpt2(),
        args=training_args(tmp_path, max_steps=4, logging_steps=2),
        train_dataset=LMDataset(),
        callbacks=[probe],
    )
    trainer.train()
    assert probe.pairs
    for logs, entry, step in probe.pairs:
        assert entry == {**logs, "step": step}


def test_reporters_run_before_added_callbacks_unless_add_callbacks_places_them(tmp_path):
    trainer = Trainer(model=tiny_gpt2(), args=training_args(tmp_path, max_steps=2), train_dataset=LMDataset())
    late = PruningCallback(PruningConfig(target_sparsity=0.5))
    trainer.add_callback(late)
    callbacks = trainer.callback_handler.callbacks
    printer = next(c for c in callbacks if isinstance(c, PrinterCallback))
    # the reason for the adapter: a callback added by hand runs after the printer (and the report_to integrations)
    assert callbacks.index(printer) < callbacks.index(late)
    placed = PruningCallback(PruningConfig(target_sparsity=0.5))
    add_callbacks(trainer, placed)
    callbacks = trainer.callback_handler.callbacks
    assert callbacks.index(placed) < callbacks.index(printer)
    assert callbacks.index(late) < callbacks.index(placed)  # every other callback keeps its order


def test_a_warning_says_when_reporters_are_missed(caplog, monkeypatch):
    monkeypatch.setattr(trainer_logs, "_warned", False)
    callback = PruningCallback(PruningConfig(target_sparsity=0.5))
    state = SimpleNamespace(log_history=[{"loss": 1.0, "step": 3}], global_step=3)
    logs = {"loss": 1.0}
    with caplog.at_level(logging.WARNING, logger="hf_compress.trainer.logs"):
        trainer_logs.add_to_logs(callback, SimpleNamespace(report_to=["wandb"]), state, logs, {"sparsity": 0.5})
    assert logs["sparsity"] == 0.5 and state.log_history[-1]["sparsity"] == 0.5
    assert "hf_compress.add_callbacks" in caplog.text and "wandb" in caplog.text
