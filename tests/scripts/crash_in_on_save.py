"""Train a tiny GPT-2 with pruning + QAT and kill the process inside ``on_save`` at step 10 (run as a subprocess).

The killing callback is given to the Trainer before the compression callbacks, so it runs first: the Trainer has
written ``checkpoint-10`` completely and the compression callbacks' ``on_save`` never runs, which is the crash window
between the Trainer's writes and the callbacks'.

Usage: python crash_in_on_save.py OUTPUT_DIR kill|straight|resume (straight and resume write OUTPUT_DIR/final.safetensors)
"""

from __future__ import annotations

import os
import sys

from safetensors.torch import save_file
from transformers import Trainer, TrainerCallback

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from conftest import LMDataset, tiny_gpt2, training_args  # noqa: E402
from hf_compress import PruningCallback, PruningConfig, QATCallback, QATConfig  # noqa: E402

PRUNING = dict(target_sparsity=0.5, criterion="movement", start=2, end=16, frequency=3)
QAT = dict(weight_bits=4, start=4)
TRAINING = dict(max_steps=20, save_strategy="steps", save_steps=10)


class KillInOnSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == 10:
            os._exit(17)


if __name__ == "__main__":
    output_dir, mode = sys.argv[1], sys.argv[2]
    callbacks = [PruningCallback(PruningConfig(**PRUNING)), QATCallback(QATConfig(**QAT))]
    if mode == "kill":
        callbacks.insert(0, KillInOnSave())
    model = tiny_gpt2(0)
    trainer = Trainer(
        model=model, args=training_args(output_dir, **TRAINING), train_dataset=LMDataset(), callbacks=callbacks
    )
    trainer.train(resume_from_checkpoint=os.path.join(output_dir, "checkpoint-10") if mode == "resume" else None)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"},
        f"{output_dir}/final.safetensors",
    )
