"""Two-process DDP run of DistillationCallback with learned projections; rank 0 writes what every rank saw as JSON.

Launched by tests/distillation/test_distillation_callback.py:
``accelerate launch --multi_gpu --num_processes 2 --main_process_port <port> ddp_distillation.py <out.json> <dir>``
"""

from __future__ import annotations

import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from torch.nn.parallel import DistributedDataParallel  # noqa: E402
from transformers import Trainer  # noqa: E402

from conftest import LMDataset, end_launched_process, tiny_llama, training_args  # noqa: E402
from hf_compress import DistillationCallback, DistillationConfig  # noqa: E402
from hf_compress.distillation.projections import LayerProjections  # noqa: E402
from hf_compress.distributed import all_gather_objects, rank, world_size  # noqa: E402

torch.set_num_threads(1)


def main(result_path: str, output_dir: str) -> None:
    teacher = tiny_llama(seed=1, hidden_size=64, intermediate_size=128)
    student = tiny_llama(seed=0)
    callback = DistillationCallback(teacher, DistillationConfig(alpha=0.5, temperature=2.0, layer_map={2: 2}))
    args = training_args(output_dir, max_steps=4, logging_steps=2, per_device_train_batch_size=4)
    trainer = Trainer(model=student, args=args, train_dataset=LMDataset(n=64), callbacks=[callback])
    trainer.train()

    projection = callback.projections.maps["2"].weight.detach()
    initial_projection = LayerProjections({2: (32, 64)}, seed=0).maps["2"].weight.detach()
    seen = {
        "rank": rank(),
        "world_size": world_size(),
        "model_wrapped": type(trainer.model_wrapped).__name__,
        "teacher_type": type(callback.teacher).__name__,
        "teacher_is_ddp": isinstance(callback.teacher, DistributedDataParallel),
        "teacher_training": callback.teacher.training,
        "teacher_requires_grad": any(p.requires_grad for p in callback.teacher.parameters()),
        "teacher_device": str(next(callback.teacher.parameters()).device),
        "student_device": str(next(student.parameters()).device),
        "projection_sum": float(projection.double().sum()),
        "projection_trained": float((projection - initial_projection).abs().sum()),
        "student_sum": float(sum(p.detach().double().sum() for p in student.parameters())),
        "student_hooks": len(student._forward_hooks) + len(student._forward_pre_hooks),
        "logs": [entry for entry in trainer.state.log_history if "distill_loss" in entry],
    }
    gathered = all_gather_objects(seen)
    if rank() == 0:
        with open(result_path, "w") as handle:
            json.dump(gathered, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
    end_launched_process()
