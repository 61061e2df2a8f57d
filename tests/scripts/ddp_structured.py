"""Run under `accelerate launch --multi_gpu --num_processes 2 ddp_structured.py OUT_DIR` (CPU, gloo).

Each rank trains a tiny Llama with a gradual (activation criterion, rank-local batches) and then a one-shot
structured run (its hidden cut rotated onto the principal axes first), and writes OUT_DIR/rank<r>.txt: the selection
after every update, the final shrunk shapes, a weight hash and the shrink messages. tests/structured/test_ddp.py
checks the two ranks agree.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from transformers import Trainer, TrainerCallback  # noqa: E402

from conftest import dataset_for, end_launched_process, tiny_llama, training_args  # noqa: E402
from hf_compress import StructuredPruningCallback, StructuredPruningConfig, distributed  # noqa: E402


class SelectionWriter(TrainerCallback):
    def __init__(self, structured: StructuredPruningCallback, lines: list[str]):
        self.structured, self.lines = structured, lines

    def on_step_end(self, args, state, control, **kwargs):
        self.lines.append(
            f"step {state.global_step} {json.dumps(self.structured.selection.to_dict(), sort_keys=True)}"
        )


def weights_digest(model) -> str:
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def main(out_dir: str) -> None:
    lines: list[str] = []
    for mode, config in (
        (
            "gradual",
            StructuredPruningConfig(
                shape={"num_key_value_heads": 1, "intermediate_size": 24, "num_hidden_layers": 2},
                mode="gradual",
                end_step=9,
                update_every=3,
            ),
        ),
        (
            "one_shot",
            StructuredPruningConfig(
                shape={"hidden_size": 24, "intermediate_size": 32, "num_hidden_layers": 2}, calibration_batches=2
            ),
        ),
    ):
        model = tiny_llama(0, head_dim=8, num_hidden_layers=3)
        structured = StructuredPruningCallback(config)
        trainer = Trainer(
            model=model,
            args=training_args(os.path.join(out_dir, mode), max_steps=12, per_device_train_batch_size=4),
            train_dataset=dataset_for("llama", seed=0),
            callbacks=[structured, SelectionWriter(structured, lines)],
        )
        trainer.train()
        lines.append(
            f"{mode} shape {json.dumps(trainer.model.config.hf_compress_structured['after'], sort_keys=True)}"
        )
        lines.append(f"{mode} weights {weights_digest(trainer.model)}")
        lines.append(f"{mode} messages {json.dumps(trainer.model.config.hf_compress_structured['messages'])}")
    lines.append(f"world_size {distributed.world_size()}")
    with open(os.path.join(out_dir, f"rank{distributed.rank()}.txt"), "w") as handle:
        handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
    end_launched_process()
