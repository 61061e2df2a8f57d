"""2-process DDP run of QATCallback, launched by tests/quantization/test_qat_ddp.py through ``accelerate launch``.

Run A trains with learned scales (LSQ) and static activation observers, saving a checkpoint halfway; run B resumes
from that checkpoint. Rank 0 writes ``result.json`` into the output folder (argv[1]) with what the test checks.
"""

from __future__ import annotations

import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from transformers import Trainer, TrainerCallback  # noqa: E402

from conftest import LMDataset, end_launched_process, tiny_llama, training_args  # noqa: E402
from hf_compress import QATCallback, QATConfig  # noqa: E402
from hf_compress.distributed import all_gather_objects, is_main_process, world_size  # noqa: E402

torch.set_num_threads(1)
OUTPUT = sys.argv[1]
CONFIG = dict(
    weight_bits=4,
    granularity="per_group",
    group_size=8,
    quantizer="lsq",
    activations="per_tensor",
    freeze_observers=0.5,
)


class InitialScales(TrainerCallback):
    """Learned scales right after QAT initialised them (before the first optimizer step)."""

    def __init__(self, qat):
        self.qat, self.scales = qat, None

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.scales is None:
            self.scales = {n: r.quantizer.log_scale.detach().clone() for n, r in self.qat.modules.items()}


def run(output_dir, resume=None):
    model = tiny_llama()
    args = training_args(output_dir, max_steps=6, save_strategy="steps", save_steps=3, per_device_train_batch_size=4)
    trainer = Trainer(model=model, args=args, train_dataset=LMDataset(n=64))
    qat = QATCallback(QATConfig(**CONFIG))
    initial = InitialScales(qat)
    trainer.add_callback(qat)
    trainer.add_callback(initial)
    trainer.train(resume_from_checkpoint=resume)
    return model, initial.scales


def digest(model):
    out = {}
    for name, module in model.named_modules():
        if hasattr(module, "hf_compress_qparams"):
            out[name] = {
                "weight": module.weight.detach().double().sum().item(),
                "scale": module.hf_compress_qparams.scale.double().sum().item(),
                "act_scale": module.hf_compress_act_qparams.scale.item(),
            }
    return out


straight, initial_scales = run(os.path.join(OUTPUT, "a"))
straight_digest = digest(straight)
gathered = all_gather_objects(straight_digest)
keys_unchanged = list(straight.state_dict()) == list(tiny_llama().state_dict())
scales_moved = any(
    not torch.allclose(initial_scales[name], module.hf_compress_qparams.scale.log())
    for name, module in straight.named_modules()
    if hasattr(module, "hf_compress_qparams")
)

resumed, _ = run(os.path.join(OUTPUT, "a"), resume=os.path.join(OUTPUT, "a", "checkpoint-3"))
resumed_digest = digest(resumed)

if is_main_process():
    with open(os.path.join(OUTPUT, "result.json"), "w") as handle:
        json.dump(
            {
                "world_size": world_size(),
                "ranks_agree": all(d == gathered[0] for d in gathered),
                "n_modules": len(straight_digest),
                "keys_unchanged": keys_unchanged,
                "scales_moved": scales_moved,
                "straight": straight_digest,
                "resumed": resumed_digest,
            },
            handle,
        )
end_launched_process()
