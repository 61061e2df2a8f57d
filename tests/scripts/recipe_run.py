"""Train a tiny Llama with a recipe; run by tests/multiprocess under `accelerate launch` (or plain python).

Each rank writes ``rank<R>.json``: a checksum of the pruning masks at every mask update. Rank 0 writes the final
weights to ``final.safetensors``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import Trainer, TrainerCallback

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import hf_compress  # noqa: E402
from conftest import LMDataset, end_launched_process, tiny_llama, training_args  # noqa: E402
from hf_compress import distributed  # noqa: E402
from hf_compress.pruning.callback import PruningCallback  # noqa: E402


class MaskLog(TrainerCallback):
    """Runs after PruningCallback: records a checksum of its masks whenever they change."""

    def __init__(self, pruning: PruningCallback):
        self.pruning = pruning
        self.updates: list[dict] = []
        self.last = None

    def on_optimizer_step(self, args, state, control, **kwargs):
        digest = hashlib.sha256()
        for name in sorted(self.pruning.masks):
            digest.update(name.encode())
            digest.update(self.pruning.masks[name].cpu().numpy().tobytes())
        value = digest.hexdigest()
        if value != self.last:
            self.updates.append({"step": state.global_step + 1, "masks": value})
            self.last = value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--recipe", required=True, help="JSON")
    parser.add_argument("--per_device_batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(1)
    recipe = json.loads(args.recipe)
    model = tiny_llama(seed=0)
    teacher = tiny_llama(seed=1) if "distillation" in recipe else None
    trainer = Trainer(
        model=model,
        args=training_args(
            args.out,
            max_steps=args.steps,
            per_device_train_batch_size=args.per_device_batch,
            train_sampling_strategy="sequential",
            logging_steps=4,
        ),
        train_dataset=LMDataset(n=96),
    )
    callbacks = hf_compress.attach(trainer, recipe, teacher=teacher)
    pruning = next((c for c in callbacks if isinstance(c, PruningCallback)), None)
    log = MaskLog(pruning) if pruning is not None else None
    if log is not None:
        trainer.add_callback(log)
    trainer.train()
    rank = distributed.rank()
    with open(os.path.join(args.out, f"rank{rank}.json"), "w") as handle:
        json.dump({"world_size": distributed.world_size(), "updates": log.updates if log else []}, handle)
    if distributed.is_main_process():
        state = {
            k: v.detach().cpu().contiguous() for k, v in distributed.unwrap_model(trainer.model).state_dict().items()
        }
        save_file(state, os.path.join(args.out, "final.safetensors"))


if __name__ == "__main__":
    main()
    end_launched_process()
