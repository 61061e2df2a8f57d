"""The demo's two modes (``--quick`` and full) and the one compression recipe it runs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DemoSettings:
    """Sizes and budgets of one demo mode.

    The teacher trains at a constant learning rate (after warm-up) and is evaluated every ``teacher_eval_every``
    steps on the in-distribution set (the training sentences, scored in eval mode). It stops at the plateau: when
    ``plateau_patience`` evaluations in a row each improve the best eval loss by at most ``plateau_min_delta`` nats
    (transformers' ``EarlyStoppingCallback``), or at ``teacher_max_steps`` (the report then says it did not
    plateau). Students and the dense reference then train ``student_steps`` more steps on the same batches.
    Patience 5, not 3: with 3, the full teacher stopped at step 400 on one CPU (a pause of the loss at constant lr)
    and the dense reference then gained 0.24 nats in 300 steps; with 5 it stopped at 1150 (gaining 0.02 after).
    """

    countries: int
    hidden_size: int
    layers: int
    student_steps: int
    teacher_max_steps: int
    teacher_eval_every: int
    plateau_patience: int = 5
    plateau_min_delta: float = 0.01
    batch_size: int = 32
    teacher_lr: float = 3e-3
    student_lr: float = 1e-3
    target_sparsity: float = 0.5
    eval_every: int = 50
    latency_runs: int = 30


QUICK = DemoSettings(
    countries=10, hidden_size=64, layers=2, student_steps=100, teacher_max_steps=1000, teacher_eval_every=25
)
FULL = DemoSettings(
    countries=24,
    hidden_size=96,
    layers=3,
    student_steps=300,
    teacher_max_steps=2500,
    teacher_eval_every=50,
    eval_every=75,
)


def demo_recipe(settings: DemoSettings) -> dict:
    """The one recipe the demo compresses with: gradual pruning + distillation + int8 QAT."""
    return {
        "pruning": {
            "target_sparsity": settings.target_sparsity,
            "schedule": "cubic",
            "start": 0.0,
            "end": 0.6,
            "frequency": 10,
            "criterion": "magnitude",
        },
        "distillation": {"loss": "kl", "temperature": 2.0, "alpha": 0.7},
        "quantization": {"weight_bits": 8, "granularity": "per_channel", "start": 0.6},
    }


def shrunk_recipe(settings: DemoSettings) -> dict:
    """The physically smaller student: half the KV groups (with their query heads) and half the MLP neurons, chosen
    by activation importance on calibration batches, then recovered by distillation from the full teacher."""
    return {
        "structured_pruning": {
            "shape": {"num_key_value_heads": 2, "intermediate_size": settings.hidden_size},
            "criterion": "activation",
        },
        "distillation": {"loss": "kl", "temperature": 2.0, "alpha": 0.7},
    }
