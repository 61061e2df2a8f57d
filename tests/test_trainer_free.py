"""Every technique in a hand-written PyTorch loop, without a Trainer: the appliers the callbacks wire up."""

from __future__ import annotations

import torch

from conftest import LMDataset, on_grid, tiny_llama
from hf_compress import DistillationConfig, PruningConfig, QATConfig, convert_, prepare_qat_
from hf_compress.distillation.objective import DistillationObjective
from hf_compress.pruning.gradual import GradualPruner
from hf_compress.targets import weight_out_in


def test_prune_distill_and_quantize_in_a_plain_loop():
    student, teacher = tiny_llama(seed=0), tiny_llama(seed=1).eval()
    data = LMDataset(n=32)
    loader = torch.utils.data.DataLoader(data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    steps = 12
    pruner = GradualPruner(student, PruningConfig(target_sparsity=0.5, start=0, end=8, frequency=2), steps)
    qat = prepare_qat_(student, QATConfig(weight_bits=4, granularity="per_group", group_size=16))
    objective = DistillationObjective(DistillationConfig(alpha=0.5, temperature=2.0), causal=True)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3)
    distill_losses, step = [], 0
    while step < steps:
        for batch in loader:
            with torch.no_grad():
                teacher_outputs = teacher(**batch)
            losses = objective(student(**batch), teacher_outputs, batch)
            losses.loss.backward()
            pruner.before_optimizer_step()
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            pruner.update(step)
            distill_losses.append(float(losses.distill_loss))
            if step == steps:
                break
    pruner.finish()
    convert_(student)

    assert abs(pruner.sparsity_logs(steps)["sparsity"] - 0.5) <= 0.01
    assert all(loss > 0 and loss == loss for loss in distill_losses)
    for name, record in qat.modules.items():
        module = record.module
        assert on_grid(module), name
        weight = weight_out_in(module.weight.detach(), module)
        mask = pruner.masks.get(name)
        if mask is not None:
            assert (weight[~mask] == 0).all(), name  # pruned weights stay exactly zero on the grid
    assert not student._forward_hooks and not student._forward_pre_hooks


def test_the_objective_alone_moves_the_student_towards_the_teacher():
    student, teacher = tiny_llama(seed=0), tiny_llama(seed=1).eval()
    batch = LMDataset(n=8)[0]
    batch = {key: value[None].repeat(8, 1) for key, value in batch.items()}
    objective = DistillationObjective(DistillationConfig(alpha=1.0), causal=True)
    optimizer = torch.optim.AdamW(student.parameters(), lr=5e-3)
    with torch.no_grad():
        teacher_outputs = teacher(**batch)
    losses = []
    for _ in range(10):
        result = objective(student(**batch), teacher_outputs, batch)
        result.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(result.distill_loss))
    assert losses[-1] < 0.5 * losses[0]
