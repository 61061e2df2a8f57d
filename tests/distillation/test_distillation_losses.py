"""The distillation losses as pure functions, the position selection, and the registry / config contract."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hf_compress import DistillationConfig, get_registry
from hf_compress.distillation.losses import cosine, jsd, kl, mse, reverse_kl
from hf_compress.distillation.positions import counted_positions, select
from hf_compress.registry import reset_registry


def reference_kl(p_logits, q_logits, temperature):
    """KL(softmax(p/T) || softmax(q/T)) per row, via torch's kl_div."""
    return F.kl_div(
        F.log_softmax(q_logits / temperature, -1),
        F.log_softmax(p_logits / temperature, -1),
        log_target=True,
        reduction="none",
    ).sum(-1)


def test_kl_is_forward_kl_scaled_by_t_squared_and_normalised():
    torch.manual_seed(0)
    student, teacher = torch.randn(6, 11), torch.randn(6, 11)
    student.requires_grad_(True)
    expected = reference_kl(teacher, student, 2.0).sum() * 4.0 / 3.0
    loss = kl(student, teacher, 3.0, temperature=2.0)
    assert torch.allclose(loss, expected, atol=1e-6)
    # the hand-written backward matches autograd's
    (grad,) = torch.autograd.grad(loss, student)
    (expected_grad,) = torch.autograd.grad(expected, student)
    assert torch.allclose(grad, expected_grad, atol=1e-6)
    assert kl(student, student.detach(), 3.0, temperature=2.0).abs() < 1e-6


def test_reverse_kl_swaps_the_arguments():
    torch.manual_seed(1)
    student, teacher = torch.randn(5, 7), torch.randn(5, 7)
    expected = reference_kl(student, teacher, 1.5).sum() * 1.5**2 / 5
    assert torch.allclose(reverse_kl(student, teacher, 5, temperature=1.5), expected, atol=1e-6)
    assert not torch.allclose(reverse_kl(student, teacher, 5), kl(student, teacher, 5))


def test_jsd_is_the_generalised_mixture_divergence():
    torch.manual_seed(2)
    student, teacher = torch.randn(4, 9), torch.randn(4, 9)
    beta = 0.3
    p_t, p_s = F.softmax(teacher, -1), F.softmax(student, -1)
    mixture = beta * p_t + (1 - beta) * p_s
    expected = (
        beta * (p_t * (p_t / mixture).log()).sum(-1) + (1 - beta) * (p_s * (p_s / mixture).log()).sum(-1)
    ).sum()
    assert torch.allclose(jsd(student, teacher, 1, beta=beta), expected, atol=1e-5)
    # symmetric at beta=0.5 and bounded by log 2
    assert torch.allclose(jsd(student, teacher, 1), jsd(teacher, student, 1), atol=1e-6)
    assert jsd(student * 50, -student * 50, 4) <= math.log(2) + 1e-5
    with pytest.raises(ValueError, match="jsd_beta"):
        jsd(student, teacher, 1, beta=1.0)


def test_mse_and_cosine():
    student, teacher = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[3.0, 0.0], [0.0, -2.0]])
    assert torch.allclose(mse(student, teacher, 2), torch.tensor((2.0 + 8.0) / 2))
    # same direction -> 0, opposite -> 2; summed and divided by the normaliser
    assert torch.allclose(cosine(student, teacher, 4), torch.tensor(2.0 / 4), atol=1e-6)


def test_losses_are_registered_and_a_plugin_loss_is_used_by_name():
    registry = get_registry()
    assert set(registry.names("distillation_loss")) >= {"kl", "reverse_kl", "jsd", "mse", "cosine"}
    try:

        def l1_logits(student, teacher, normalizer, *, temperature=1.0, **options):
            return (student - teacher).abs().mean(-1).sum() / normalizer

        registry.register("distillation_loss", "test_l1_logits", l1_logits)
        assert DistillationConfig(loss="test_l1_logits").loss == "test_l1_logits"
    finally:
        reset_registry()
    with pytest.raises(ValueError, match="loss: unknown distillation_loss 'kll'.*Did you mean 'kl'"):
        DistillationConfig(loss="kll")


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("alpha", 1.5, r"alpha must be a number in \[0.0, 1.0\]"),
        ("alpha", -0.1, r"alpha must be a number in \[0.0, 1.0\]"),
        ("temperature", 0.0, r"temperature must be a number in \(0.0, 100.0\]"),
        ("temperature", -1.0, r"temperature must be a number in \(0.0, 100.0\]"),
        ("jsd_beta", 0.0, "jsd_beta"),
        ("hidden_loss", "l2", "hidden_loss must be one of 'mse', 'cosine'"),
        ("hidden_weight", -1.0, "hidden_weight"),
        ("teacher_dtype", "int8", "teacher_dtype must be one of"),
        ("layer_map", {-1: 0}, "layer_map"),
        ("layer_map", {}, "layer_map"),
    ],
)
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        DistillationConfig(**{field: value})


def test_config_round_trips_through_json_like_dicts():
    config = DistillationConfig(loss="jsd", jsd_beta=0.2, layer_map={1: 3}, teacher_dtype="torch.bfloat16")
    restored = DistillationConfig.from_dict({**config.to_dict(), "layer_map": {"1": 3}})
    assert restored == config and restored.torch_teacher_dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown field.*Did you mean 'temperature'"):
        DistillationConfig.from_dict({"temprature": 2.0})


def test_counted_positions_shift_labels_and_padding():
    labels = torch.tensor([[-100, 5, 6, 7, -100], [1, 2, -100, 4, 5]])
    attention_mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    mask, shifted = counted_positions((2, 5), labels=labels, attention_mask=attention_mask, causal=True)
    assert shifted
    # logit t counts when label t+1 is real and tokens t, t+1 are not padding
    assert mask.tolist() == [[True, True, True, False], [True, False, True, True]]
    logits = torch.arange(2 * 5 * 3, dtype=torch.float).view(2, 5, 3)
    assert torch.equal(select(logits, mask, shifted), logits[:, :-1][mask])
    # not causal: labels and mask apply position by position; a [batch] label vector against [batch, seq] is ignored
    mask, shifted = counted_positions((2, 5), labels=labels, attention_mask=attention_mask)
    assert not shifted and mask.sum() == 7
    mask, _ = counted_positions((2,), labels=torch.tensor([1, -100]), attention_mask=attention_mask)
    assert mask.tolist() == [True, False]
    # pre-shifted labels are used as they are
    mask, shifted = counted_positions((2, 5), shift_labels=labels, causal=True)
    assert not shifted and mask.tolist() == (labels != -100).tolist()
