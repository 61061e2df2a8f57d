"""Run under ``torchrun --nproc_per_node 2 deepspeed_pruning.py OUT_DIR STAGE [PATTERN SCOPE]`` (CPU, gloo).

STAGE is 0 (plain DDP, the reference), 2 or 3 (DeepSpeed ZeRO through ``TrainingArguments(deepspeed=...)``).
Trains a tiny Llama with ``PruningCallback`` for 8 steps, saving a checkpoint at step 4, then resumes a second
Trainer from that checkpoint to step 8. Each rank writes OUT_DIR/rank<r>.json: at every mask update a SHA-256 of
the masks and whether every pruned weight is zero in the optimizer's fp32 master (DeepSpeed) and in the module;
then the final sparsity. Rank 0 writes OUT_DIR/final.safetensors and OUT_DIR/resumed.safetensors (whole model).
tests/engines/test_deepspeed.py compares them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from safetensors.torch import save_file  # noqa: E402
from transformers import Trainer, TrainerCallback  # noqa: E402

from conftest import dataset_for, tiny_llama, training_args  # noqa: E402
from hf_compress import PruningCallback, PruningConfig, distributed  # noqa: E402

STEPS, SAVE_AT = 8, 4


def deepspeed_config(stage: int) -> dict | None:
    if stage == 0:
        return None
    return {
        "zero_optimization": {"stage": stage, "stage3_param_persistence_threshold": 0},
        "zero_allow_untested_optimizer": True,  # the Trainer's torch AdamW: no DeepSpeed op to compile
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
    }


def masks_digest(masks: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(masks):
        digest.update(name.encode())
        digest.update(masks[name].cpu().numpy().tobytes())
    return digest.hexdigest()


def zero_where_pruned(module, mask, full_weight: torch.Tensor) -> bool:
    weight = full_weight.t() if type(module).__name__ == "Conv1D" else full_weight
    return bool((weight[~mask] == 0).all())


def probe_master(module, mask) -> tuple[bool, bool]:
    """(pruned weights are zero in the fp32 master, ... in the module's own weight): whole weights, read here only."""
    import deepspeed
    from deepspeed.utils import safe_get_full_fp32_param

    master = safe_get_full_fp32_param(module.weight)  # None without DeepSpeed
    master_ok = True if master is None else zero_where_pruned(module, mask, master)
    with deepspeed.zero.GatheredParameters(
        [module.weight], modifier_rank=None, enabled=hasattr(module.weight, "ds_id")
    ):
        module_ok = zero_where_pruned(module, mask, module.weight.detach().clone())
    return master_ok, module_ok


class MaskProbe(TrainerCallback):
    """After the pruning callback: at every mask update, the masks' hash and whether every copy holds the zeros."""

    def __init__(self, pruning: PruningCallback, records: list[dict]):
        self.pruning, self.records = pruning, records

    def on_optimizer_step(self, args, state, control, **kwargs):
        step = state.global_step + 1
        if self.pruning.last_update_step != step:
            return
        checks = [probe_master(self.pruning.modules[name], mask) for name, mask in sorted(self.pruning.masks.items())]
        self.records.append(
            {
                "step": step,
                "masks": masks_digest(self.pruning.masks),
                "master_zero": all(c[0] for c in checks),
                "module_zero": all(c[1] for c in checks),
            }
        )


def whole_model(model) -> dict[str, torch.Tensor]:
    import deepspeed

    params = list(model.parameters())
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None, enabled=hasattr(params[0], "ds_id")):
        return {name: p.detach().clone().contiguous() for name, p in model.named_parameters()}


def train(out_dir: str, stage: int, pattern: str, scope: str, resume: str | None = None):
    records: list[dict] = []
    config = PruningConfig(
        target_sparsity=0.5, pattern=pattern, scope=scope, schedule="cubic", start=0, end=6, frequency=2
    )
    pruning = PruningCallback(config)
    model = tiny_llama(0)
    args = training_args(
        os.path.join(out_dir, "run"),
        max_steps=STEPS,
        per_device_train_batch_size=4,
        save_strategy="steps",
        save_steps=SAVE_AT,
        deepspeed=deepspeed_config(stage),
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset_for("llama", n=64),
        callbacks=[pruning, MaskProbe(pruning, records)],
    )
    trainer.train(resume_from_checkpoint=resume)
    weights = whole_model(model)
    sparsity = 1 - sum(int(m.sum()) for m in pruning.masks.values()) / sum(m.numel() for m in pruning.masks.values())
    return records, weights, sparsity, trainer


def main(out_dir: str, stage: int, pattern: str, scope: str) -> None:
    torch.set_num_threads(1)
    records, weights, sparsity, trainer = train(out_dir, stage, pattern, scope)
    checkpoint = os.path.join(out_dir, "run", f"checkpoint-{SAVE_AT}")
    result = {"world_size": distributed.world_size(), "updates": records, "final_sparsity": sparsity}
    result["engine"] = type(trainer.model_wrapped).__name__
    del trainer
    resumed_records, resumed, _, _ = train(out_dir, stage, pattern, scope, resume=checkpoint)
    result["resumed_updates"] = resumed_records
    with open(os.path.join(out_dir, f"rank{distributed.rank()}.json"), "w") as handle:
        json.dump(result, handle)
    if distributed.is_main_process():
        save_file(weights, os.path.join(out_dir, "final.safetensors"))
        save_file(resumed, os.path.join(out_dir, "resumed.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *(sys.argv[3:5] or ["unstructured", "layer"]))
    distributed.shutdown()
    os._exit(0)  # DeepSpeed's CPU communication backend can abort at interpreter exit
