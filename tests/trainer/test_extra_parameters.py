"""Extra trainable parameters in a live optimizer: any LR scheduler, untouched optimizer.pt / scheduler.pt, resume."""

from __future__ import annotations

import pytest
import torch

from hf_compress.trainer import ExtraParameters


def schedulers(optimizer):
    return {
        "lambda": torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step)),
        "cosine": torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10),
        "onecycle": torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=20),
        "plateau-free chain": torch.optim.lr_scheduler.SequentialLR(
            optimizer,
            [
                torch.optim.lr_scheduler.LinearLR(optimizer, 0.1, 1.0, total_iters=3),
                torch.optim.lr_scheduler.ExponentialLR(optimizer, 0.9),
            ],
            milestones=[3],
        ),
    }


def run(kind, steps, resume=None):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 4)
    extra = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = schedulers(optimizer)[kind]
    seat = ExtraParameters({"extra": extra}, lr=0.01, weight_decay=0.0)
    if resume is not None:  # what a Trainer checkpoint and the callback's own file hold
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        with torch.no_grad():
            extra.copy_(resume["extra"])
        seat.load_state_tensors(*resume["seat"])
    ratios = []
    for _ in range(steps):
        loss = model(torch.ones(1, 4)).sum() + (extra**2).sum()
        loss.backward()
        seat.join(optimizer)
        group = optimizer.param_groups[-1]
        ratios.append((group["lr"] / 0.01, optimizer.param_groups[0]["lr"] / optimizer.param_groups[0]["initial_lr"]))
        optimizer.step()
        seat.leave(optimizer)
        scheduler.step()
        optimizer.zero_grad()
        seat.zero_grad()
    checkpoint = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "extra": extra.detach().clone(),
        "seat": seat.state_tensors(),
    }
    return optimizer, scheduler, seat, extra, ratios, checkpoint


@pytest.mark.parametrize("kind", ["lambda", "cosine", "onecycle", "plateau-free chain"])
def test_the_extra_group_follows_any_schedule_and_leaves_no_trace(kind):
    optimizer, scheduler, seat, extra, ratios, _ = run(kind, 6)
    for extra_ratio, trainer_ratio in ratios:
        assert extra_ratio == pytest.approx(trainer_ratio)
    assert len(optimizer.param_groups) == 1 and len(optimizer.state_dict()["param_groups"]) == 1
    assert extra not in optimizer.state
    assert len(scheduler.get_last_lr()) == 1 and len(scheduler.state_dict().get("base_lrs", [None])) == 1
    assert not (set(vars(scheduler)) & {"state_dict", "step"}) and "state_dict" not in vars(optimizer)
    tensors, values = seat.state_tensors()
    assert "extra::exp_avg" in tensors and "extra::step" in tensors


@pytest.mark.parametrize("kind", ["lambda", "onecycle", "plateau-free chain"])
def test_a_resumed_run_matches_the_straight_run_bit_for_bit(kind):
    *_, straight = run(kind, 6)
    *_, halfway = run(kind, 3)
    *_, resumed = run(kind, 3, resume=halfway)
    assert torch.equal(straight["extra"], resumed["extra"])
    assert torch.equal(straight["seat"][0]["extra::exp_avg_sq"], resumed["seat"][0]["extra::exp_avg_sq"])
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
