"""Schedules: the math of each built-in, mask-update steps, and sparsity_at semantics."""

from __future__ import annotations

import math

import pytest

from hf_compress import PruningConfig, sparsity_at
from hf_compress.pruning.schedules import (
    is_mask_update_step,
    last_update_at_or_before,
    mask_update_steps,
    resolve_start_end,
    schedule_fraction,
    scheduled_sparsity,
)
from hf_compress.registry import get_registry

BUILTINS = ["constant", "one_shot", "linear", "cubic", "exponential", "cosine"]


def schedule(name):
    return get_registry().get("schedule", name)


@pytest.mark.parametrize("name", BUILTINS)
def test_every_schedule_is_registered_and_ends_at_the_final_sparsity(name):
    value = scheduled_sparsity(schedule(name), 100, 0, 100, 0.1, 0.8)
    assert value == pytest.approx(0.8, abs=1e-12)
    # monotone non-decreasing along the ramp
    values = [scheduled_sparsity(schedule(name), step, 0, 100, 0.1, 0.8) for step in range(101)]
    assert all(b >= a - 1e-12 for a, b in zip(values, values[1:]))


def test_cubic_is_zhu_and_gupta():
    s_i, s_f, t0, t1 = 0.05, 0.9, 10, 110
    for t in range(t0, t1 + 1, 7):
        expected = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0)) ** 3
        assert scheduled_sparsity(schedule("cubic"), t, t0, t1, s_i, s_f) == pytest.approx(expected, abs=1e-12)


def test_exponential_follows_the_issue_formula():
    s_i, s_f = 0.2, 0.95
    for p in [0.0, 0.1, 0.25, 0.5, 0.8, 1.0]:
        expected = 1 - (1 - s_i) * ((1 - s_f) / (1 - s_i)) ** p
        got = scheduled_sparsity(schedule("exponential"), round(p * 200), 0, 200, s_i, s_f)
        assert got == pytest.approx(expected, abs=1e-12)
    # s_i == s_f degenerates to linear, no division by zero
    assert schedule_fraction(schedule("exponential"), 0.3, initial_sparsity=0.5, final_sparsity=0.5) == 0.3


def test_linear_cosine_constant_one_shot_shapes():
    assert schedule("linear")(0.25) == 0.25
    assert schedule("cosine")(0.5) == pytest.approx(0.5)
    assert schedule("cosine")(0.25) == pytest.approx((1 - math.cos(math.pi / 4)) / 2)
    assert schedule("constant")(0.0) == 1.0
    assert schedule("one_shot")(0.99) == 0.0 and schedule("one_shot")(1.0) == 1.0


def test_before_start_the_initial_sparsity_holds():
    assert scheduled_sparsity(schedule("constant"), 4, 5, 50, 0.1, 0.7) == 0.1
    assert scheduled_sparsity(schedule("constant"), 5, 5, 50, 0.1, 0.7) == 0.7


def test_mask_updates_every_frequency_and_exactly_at_end():
    assert mask_update_steps(0, 25, 10) == [0, 10, 20, 25]
    assert mask_update_steps(5, 30, 5) == [5, 10, 15, 20, 25, 30]
    assert mask_update_steps(7, 7, 3) == [7]
    updates = [step for step in range(60) if is_mask_update_step(step, 3, 41, 9)]
    assert updates == [3, 12, 21, 30, 39, 41]
    assert last_update_at_or_before(2, 3, 41, 9) is None
    assert last_update_at_or_before(20, 3, 41, 9) == 12
    assert last_update_at_or_before(40, 3, 41, 9) == 39
    assert last_update_at_or_before(59, 3, 41, 9) == 41


def test_sparsity_at_is_the_value_of_the_last_update():
    config = PruningConfig(target_sparsity=0.5, schedule="linear", start=0, end=100, frequency=10)
    assert sparsity_at(config, 0, 100) == 0.0
    assert sparsity_at(config, 19, 100) == pytest.approx(0.05)
    assert sparsity_at(config, 20, 100) == pytest.approx(0.10)
    assert sparsity_at(config, 99, 100) == pytest.approx(0.45)
    assert sparsity_at(config, 100, 100) == pytest.approx(0.5)
    assert sparsity_at(config, 150, 100) == pytest.approx(0.5)
    assert sparsity_at(config, 50, 100, initial_sparsity=0.2) == pytest.approx(0.35)


def test_end_is_hit_even_when_not_a_multiple_of_frequency():
    config = PruningConfig(target_sparsity=0.8, schedule="cubic", start=0, end=23, frequency=10)
    assert sparsity_at(config, 22, 1000) < 0.8
    assert sparsity_at(config, 23, 1000) == pytest.approx(0.8)


def test_float_start_end_are_fractions_of_total_steps():
    config = PruningConfig(target_sparsity=0.6, schedule="linear", start=0.1, end=0.5, frequency=1)
    assert resolve_start_end(0.1, 0.5, 200) == (20, 100)
    assert sparsity_at(config, 19, 200) == 0.0
    assert sparsity_at(config, 60, 200) == pytest.approx(0.3)
    assert sparsity_at(config, 100, 200) == pytest.approx(0.6)
    # mixed kinds: int start, float end
    mixed = PruningConfig(target_sparsity=0.6, schedule="linear", start=10, end=0.5, frequency=1)
    assert sparsity_at(mixed, 55, 200) == pytest.approx(0.6 * 45 / 90)


def test_mixed_start_end_resolving_backwards_raises():
    config = PruningConfig(target_sparsity=0.5, start=50, end=0.1)  # fine until the run length is known
    with pytest.raises(ValueError, match="end.*start"):
        sparsity_at(config, 10, 100)


def test_plugin_schedule_signature_with_and_without_context():
    def square(progress):
        return progress**2

    seen = {}

    def density_aware(progress, *, initial_sparsity, final_sparsity):
        seen.update(initial=initial_sparsity, final=final_sparsity)
        return progress

    assert schedule_fraction(square, 0.5, initial_sparsity=0.0, final_sparsity=0.9) == 0.25
    assert schedule_fraction(density_aware, 2.0, initial_sparsity=0.1, final_sparsity=0.9) == 1.0  # clamped
    assert seen == {"initial": 0.1, "final": 0.9}
    with pytest.raises(ValueError, match="fraction in \\[0, 1\\]"):
        schedule_fraction(lambda p: 2.0, 0.5, initial_sparsity=0.0, final_sparsity=0.5)
