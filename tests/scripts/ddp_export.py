"""Export after 2-process DDP QAT: launched by tests/quantization/test_export.py with ``accelerate launch``.

Every rank calls ``export``; only the main process writes and checks, every rank gets its result.
Writes ``<out>/result-<rank>.json``.
"""

from __future__ import annotations

import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from transformers import Trainer  # noqa: E402

from conftest import LMDataset, end_launched_process, tiny_llama, training_args  # noqa: E402
from hf_compress import QATCallback, QATConfig, export  # noqa: E402
from hf_compress.distributed import rank, world_size  # noqa: E402

torch.set_num_threads(1)


def main(out: str) -> None:
    model = tiny_llama()
    trainer = Trainer(
        model=model, args=training_args(os.path.join(out, "run"), max_steps=4), train_dataset=LMDataset(n=32)
    )
    trainer.add_callback(QATCallback(QATConfig(weight_bits=8)))
    trainer.train()
    result = export(trainer.model, os.path.join(out, "export"), format="compressed-tensors")
    with open(os.path.join(out, f"result-{rank()}.json"), "w") as handle:
        json.dump({"world_size": world_size(), **result.to_dict()}, handle)


if __name__ == "__main__":
    main(sys.argv[1])
    end_launched_process()
