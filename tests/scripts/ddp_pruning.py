"""Run under `accelerate launch --multi_gpu --num_processes 2 ddp_pruning.py OUT_DIR` (CPU, gloo).

Each rank writes OUT_DIR/rank<r>.txt: one line per mask update with a SHA-256 of every mask, then the count of
cross-rank mask divergences, the results of the FSDP2 shard-picking and partitioned-mask checks, then hashes of the masks and weights
after a SparseGPT one-shot (OneShotPruningCallback) and a "sparsegpt"-criterion update on each rank's own batches.
tests/pruning/test_ddp.py compares them.
"""

from __future__ import annotations

import hashlib
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from transformers import Trainer, TrainerCallback  # noqa: E402

from conftest import dataset_for, end_launched_process, tiny_gpt2, tiny_llama, training_args  # noqa: E402
from hf_compress import OneShotPruningCallback, PruningCallback, PruningConfig, distributed  # noqa: E402
from hf_compress.pruning.masks import apply_masks_, mask_in_storage_layout  # noqa: E402


def masks_digest(masks: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(masks):
        digest.update(name.encode())
        digest.update(masks[name].cpu().numpy().tobytes())
    return digest.hexdigest()


class MaskHashWriter(TrainerCallback):
    """Placed after the pruning callback: records a hash of the masks at every mask update."""

    def __init__(self, pruning: PruningCallback, lines: list[str]):
        self.pruning = pruning
        self.lines = lines

    def on_optimizer_step(self, args, state, control, **kwargs):
        if self.pruning.last_update_step == state.global_step + 1:
            self.lines.append(f"update {state.global_step + 1} {masks_digest(self.pruning.masks)}")


def check_fsdp_shard_picking(lines: list[str]) -> None:
    """A mask computed on the full [out, in] tensor zeroes the right rows of each rank's FSDP2 (dim-0) shard."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor
    from transformers.pytorch_utils import Conv1D

    mesh = init_device_mesh("cpu", (2,))
    torch.manual_seed(0)
    modules = {"linear": torch.nn.Linear(8, 6), "conv1d": Conv1D(6, 8)}  # Conv1D(nf=6, nx=8) stores [8, 6]
    masks = {name: torch.rand(6, 8) > 0.5 for name in modules}  # [out, in] for both
    expected = {}
    for name, module in modules.items():
        dense = module.weight.detach().clone()
        expected[name] = dense * mask_in_storage_layout(masks[name], module)
        module.weight = torch.nn.Parameter(distribute_tensor(dense, mesh, [Shard(0)]))
    apply_masks_(modules, masks)
    ok = all(
        torch.equal(distributed.full_tensor(module.weight.detach()), expected[name])
        and distributed.is_sharded(module.weight)
        and distributed.local_tensor(module.weight).shape[0] < expected[name].shape[0]
        for name, module in modules.items()
    )
    lines.append(f"fsdp_shard_mask {'ok' if ok else 'WRONG'}")


def check_fsdp_partitioned_masks(lines: list[str]) -> None:
    """GradualPruner on FSDP2 (dim-0 DTensor) weights: each rank stores only its shard's half of every mask, and the
    masks and pruned weights equal an unsharded run's."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    from hf_compress.pruning.gradual import GradualPruner, resolve_groups

    mesh = init_device_mesh("cpu", (2,))
    results = []
    for build, pattern in ((tiny_gpt2, "unstructured"), (tiny_llama, "2:4")):
        config = PruningConfig(
            target_sparsity=0.5, pattern=pattern, scope="global", schedule="one_shot", start=0, end=0
        )
        plain_model, sharded_model = build(0), build(0)
        plain = GradualPruner(plain_model, config, total_steps=4)
        for module in resolve_groups(sharded_model, config)[0].values():
            module.weight = torch.nn.Parameter(distribute_tensor(module.weight.detach(), mesh, [Shard(0)]))
        sharded = GradualPruner(sharded_model, config, total_steps=4)
        sharded.update(1)
        plain.update(1)
        same_masks = all(torch.equal(sharded.masks[name], mask) for name, mask in plain.masks.items())
        same_weights = all(
            torch.equal(distributed.full_tensor(sharded.modules[name].weight.detach()), module.weight.detach())
            for name, module in plain.modules.items()
        )
        ratio = sharded.keep_masks.stored_bytes() / plain.keep_masks.stored_bytes()
        results.append(same_masks and same_weights and 0.45 <= ratio <= 0.55)
    lines.append(f"fsdp_partitioned_masks {'ok' if all(results) else 'WRONG'}")


def check_one_shot(out_dir: str, lines: list[str]) -> None:
    """SparseGPT at train begin, calibrated on each rank's own batches, then criterion "sparsegpt" on training
    batches: Hessians are averaged, so every rank must end with the same masks and weights (DDP does not re-sync
    parameters after wrapping)."""
    one_shot = OneShotPruningCallback(sparsity=0.5, pattern="3:4", calibration_batches=2)
    # then, after 2 steps of training-batch Hessians (all-reduced), criterion "sparsegpt" prunes on to 2:4
    hold = PruningCallback(
        PruningConfig(target_sparsity=0.5, pattern="2:4", schedule="one_shot", start=2, end=2, criterion="sparsegpt")
    )
    model = tiny_llama(0)
    trainer = Trainer(
        model=model,
        args=training_args(os.path.join(out_dir, "one_shot"), max_steps=3, per_device_train_batch_size=4),
        train_dataset=dataset_for("llama", n=64),
        callbacks=[one_shot, hold],
    )
    trainer.train()
    weights = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
    two_four = all(int((w.reshape(w.shape[0], -1, 4) != 0).sum(-1).max()) <= 2 for w in hold.masks.values())
    lines.append(
        f"one_shot masks {masks_digest(hold.masks)} weights {weights} 2:4 {two_four} layers {len(hold.masks)}"
    )


def main(out_dir: str) -> None:
    torch.set_num_threads(1)
    lines: list[str] = []
    config = PruningConfig(target_sparsity=0.6, criterion="movement", scope="global", start=0, end=12, frequency=3)
    pruning = PruningCallback(config)
    trainer = Trainer(
        model=tiny_gpt2(0),
        args=training_args(os.path.join(out_dir, "run"), max_steps=14, per_device_train_batch_size=4),
        train_dataset=dataset_for("gpt2", n=128),
        callbacks=[pruning, MaskHashWriter(pruning, lines)],
    )
    trainer.train()
    lines.append(f"world_size {distributed.world_size()}")
    lines.append(f"divergences {pruning.mask_divergences}")
    lines.append(
        f"final_sparsity {1 - sum(int(m.sum()) for m in pruning.masks.values()) / sum(m.numel() for m in pruning.masks.values()):.6f}"
    )
    check_fsdp_shard_picking(lines)
    check_fsdp_partitioned_masks(lines)
    check_one_shot(out_dir, lines)
    with open(os.path.join(out_dir, f"rank{distributed.rank()}.txt"), "w") as handle:
        handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
    end_launched_process()
