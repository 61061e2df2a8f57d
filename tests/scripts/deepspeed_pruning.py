"""Run under ``torchrun --nproc_per_node 2 deepspeed_pruning.py OUT_DIR STAGE [CASE,CASE,...]`` (CPU, gloo).

STAGE is 0 (plain DDP, the reference), 2 or 3 (DeepSpeed ZeRO through ``TrainingArguments(deepspeed=...)``), or
-2 / -3 when ``accelerate launch --config_file examples/accelerate/deepspeed_zero{2,3}.yaml`` set DeepSpeed up.
For each case (criterion x pattern x scope, one-shot) trains a tiny Llama with ``PruningCallback`` for 8 steps,
saving a checkpoint at step 4, then resumes a second Trainer from that checkpoint to step 8. Each rank writes
OUT_DIR/rank<r>.json: per case, at every mask update a SHA-256 of the masks and whether every pruned weight is zero
in the optimizer's fp32 master (DeepSpeed) and in the module; then the final sparsity. Rank 0 writes the whole
model as OUT_DIR/<case>.final.safetensors and OUT_DIR/<case>.resumed.safetensors.
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

from conftest import dataset_for, end_launched_process, tiny_llama, training_args  # noqa: E402
from hf_compress import (  # noqa: E402
    DistillationCallback,
    DistillationConfig,
    L1RegularizationCallback,
    L1RegularizationConfig,
    OneShotPruningCallback,
    PruningCallback,
    PruningConfig,
    QATCallback,
    QATConfig,
    distributed,
)  # noqa: E402

STEPS, SAVE_AT = 8, 4


EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "accelerate")


def deepspeed_config(stage: int) -> str | None:
    """The example's DeepSpeed JSON (``zero_allow_untested_optimizer``: the Trainer's torch AdamW, no DeepSpeed op
    to compile; ``stage3_param_persistence_threshold: 0``: even tiny weights are partitioned)."""
    if stage <= 0:  # 0: plain DDP; -2 / -3: DeepSpeed set up by `accelerate launch --config_file ...`
        return None
    return os.path.join(EXAMPLES, f"deepspeed_zero{stage}.json")


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

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step == 0 and self.pruning.last_update_step == 0:  # a step-0 (or one-shot) update
            self.probe(0)

    def on_optimizer_step(self, args, state, control, **kwargs):
        step = state.global_step + 1
        if self.pruning.last_update_step == step:
            self.probe(step)

    def probe(self, step: int) -> None:
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


HOLD = {"schedule": "one_shot", "start": 0, "end": 0}  # keeps the one-shot zeros
CASES = {  # name -> (PruningConfig overrides, a callback run first: OneShotPruningCallback method, l1, kd, qat, or None)
    "magnitude_unstructured_layer": ({}, None),
    "magnitude_2:4_global": ({"pattern": "2:4", "scope": "global"}, None),
    "magnitude_row_global": ({"pattern": "row", "scope": "global"}, None),
    "magnitude_head_layer": ({"pattern": "head"}, None),  # one of the two KV groups of each layer
    "sparsegpt_unstructured_global": ({"criterion": "sparsegpt", "scope": "global"}, None),
    "one_shot_magnitude": (HOLD, "magnitude"),
    "one_shot_sparsegpt": (HOLD, "sparsegpt"),  # refused under ZeRO-3 (see refusals)
    "l1_and_magnitude": ({"targets": [r"mlp"]}, "l1"),  # L1RegularizationCallback on the attention weights
    "distillation_and_magnitude": ({}, "kd"),  # DistillationCallback, a replicated teacher
    "qat_and_magnitude": ({}, "qat"),  # QATCallback int8 (refused under ZeRO-3, see refusals)
}


def train(out_dir: str, stage: int, case: str, resume: str | None = None):
    records: list[dict] = []
    overrides, one_shot = CASES[case]
    values = dict(target_sparsity=0.5, schedule="cubic", start=0, end=6, frequency=2)
    values.update(overrides)
    pruning = PruningCallback(PruningConfig(**values))
    callbacks = [pruning, MaskProbe(pruning, records)]
    if one_shot == "l1":
        config = L1RegularizationConfig(l1_lambda=20.0, targets=[r"self_attn"])
        callbacks.insert(0, L1RegularizationCallback(config))
    elif one_shot == "kd":
        callbacks.insert(0, DistillationCallback(tiny_llama(1), DistillationConfig(loss="kl", alpha=0.5)))
    elif one_shot == "qat":
        callbacks.append(QATCallback(QATConfig(weight_bits=8, start=2)))
    elif one_shot:
        callbacks.insert(0, OneShotPruningCallback(sparsity=0.5, method=one_shot, calibration_batches=2))
    model = tiny_llama(0)
    args = training_args(
        os.path.join(out_dir, case),
        max_steps=STEPS,
        per_device_train_batch_size=4,
        save_strategy="steps",
        save_steps=SAVE_AT,
        deepspeed=deepspeed_config(stage),
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset_for("llama", n=64), callbacks=callbacks)
    trainer.train(resume_from_checkpoint=resume)
    weights = whole_model(model)
    masks = pruning.masks
    sparsity = 1 - sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    # bytes this rank holds per weight of the whole masks
    held = pruning.pruner.keep_masks.stored_bytes() / sum(m.numel() for m in masks.values())
    return records, weights, sparsity, held, type(trainer.model_wrapped).__name__


def run_hallucination_eval(out_dir: str, stage: int) -> dict:
    """HallucinationEvalCallback at two evaluations (each rank generates a share of the prompts, gathered)."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "metrics"))
    from test_hallucination_callback import OneSentence, make_tokenizer

    from conftest import tiny_gpt2
    from hf_compress import HallucinationEvalCallback

    tokenizer = make_tokenizer()
    data = OneSentence(tokenizer, n=16)
    prompts = ["the sky is", "grass is green", "mount everest is"]  # uneven shards
    references = [["The sky is blue."], ["Grass is green."], ["Mount Everest is 8849 metres tall."]]
    callback = HallucinationEvalCallback(
        prompts, references, {"max_new_tokens": 5, "do_sample": False}, generation_batch_size=1
    )
    args = training_args(
        os.path.join(out_dir, "hallucination"),
        max_steps=10,
        learning_rate=1e-2,
        per_device_train_batch_size=4,
        eval_strategy="steps",
        eval_steps=5,
        deepspeed=deepspeed_config(stage),
    )
    trainer = Trainer(model=tiny_gpt2(0), args=args, train_dataset=data, eval_dataset=data, processing_class=tokenizer)
    trainer.add_callback(callback)
    trainer.train()
    evaluations = [
        {key: value for key, value in entry.items() if "hallucination" in key or key == "step"}
        for entry in trainer.state.log_history
        if "eval_loss" in entry
    ]
    return {"evaluations": evaluations, "generations": callback.last_generations}


def main(out_dir: str, stage: int, cases: list[str]) -> None:
    torch.set_num_threads(1)
    results = {}
    for case in cases:
        records, weights, sparsity, mask_bytes_held, engine = train(out_dir, stage, case)
        checkpoint = os.path.join(out_dir, case, f"checkpoint-{SAVE_AT}")
        resumed_records, resumed, *_ = train(out_dir, stage, case, resume=checkpoint)
        results[case] = {
            "engine": engine,
            "updates": records,
            "resumed_updates": resumed_records,
            "final_sparsity": sparsity,
            "mask_bytes_held": mask_bytes_held,
        }
        if distributed.is_main_process():
            save_file(weights, os.path.join(out_dir, f"{case}.final.safetensors"))
            save_file(resumed, os.path.join(out_dir, f"{case}.resumed.safetensors"))
    hallucination = run_hallucination_eval(out_dir, stage) if stage in (0, 3, -3) else None
    refusals = {}
    if abs(stage) == 3:  # what ZeRO-3 cannot do is refused at train begin, before any step
        for name, callback in {
            "one_shot_sparsegpt": OneShotPruningCallback(sparsity=0.5, method="sparsegpt", calibration_batches=2),
            "movement": PruningCallback(PruningConfig(target_sparsity=0.5, criterion="movement")),
            "qat": QATCallback(QATConfig(weight_bits=8)),
        }.items():
            args = training_args(os.path.join(out_dir, name), max_steps=2, deepspeed=deepspeed_config(stage))
            trainer = Trainer(
                model=tiny_llama(0), args=args, train_dataset=dataset_for("llama", n=16), callbacks=[callback]
            )
            try:
                trainer.train()
                refusals[name] = None
            except ValueError as error:
                refusals[name] = str(error)
    with open(os.path.join(out_dir, f"rank{distributed.rank()}.json"), "w") as handle:
        record = {"world_size": distributed.world_size(), "cases": results, "refusals": refusals}
        json.dump({**record, "hallucination": hallucination}, handle)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",") if len(sys.argv) > 3 else list(CASES))
    end_launched_process()
