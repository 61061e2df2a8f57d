"""The pure grid functions: values on the grid, exact zeros, the straight-through estimator, MSE clipping."""

from __future__ import annotations

import pytest
import torch

from hf_compress.quantization.grid import (
    QuantSpec,
    activation_qparams_per_token,
    bake_weight,
    compute_qparams,
    dequantize,
    expand_to_weight,
    fake_quantize,
    fake_quantize_activation,
    quantize,
)

SPECS = [
    QuantSpec(8, True, "per_tensor"),
    QuantSpec(8, True, "per_channel"),
    QuantSpec(8, False, "per_channel"),
    QuantSpec(4, True, "per_group", 16),
    QuantSpec(4, False, "per_group", 8),
    QuantSpec(3, False, "per_tensor"),
    QuantSpec(2, True, "per_channel"),
]


def heavy_tailed_weight(out_features=12, in_features=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_features, in_features, generator=generator) * 0.05
    weight[0, 3] = 0.9  # an outlier, so MSE clipping has something to gain
    weight[5, 7] = -0.7
    return weight


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("method", ["minmax", "mse"])
def test_fake_quantized_values_lie_on_the_grid(spec, method):
    weight = heavy_tailed_weight()
    scale, zero_point = compute_qparams(weight, spec, method)
    groups = {"per_tensor": (1, 1), "per_channel": (12, 1), "per_group": (12, 32 // (spec.group_size or 1))}
    assert tuple(scale.shape) == groups[spec.granularity] == tuple(zero_point.shape)
    assert zero_point.dtype == torch.int32 and scale.dtype == torch.float32
    q = quantize(weight, spec, scale, zero_point)
    assert int(q.min()) >= spec.qmin and int(q.max()) <= spec.qmax
    fake = fake_quantize(weight, spec, scale, zero_point)
    assert torch.equal(fake, dequantize(q, spec, scale, zero_point))
    # the differentiable path used for learned scales computes the same values as the fused kernels
    assert torch.equal(fake_quantize(weight, spec, scale.clone().requires_grad_(True), zero_point).detach(), fake)
    # on the grid: (fake / scale) + zero_point is an integer in range, per element
    ratio = fake / expand_to_weight(scale, spec, 32) + expand_to_weight(zero_point, spec, 32)
    assert torch.allclose(ratio, ratio.round(), atol=1e-4)
    # baking is idempotent: a baked weight quantizes to the same integers
    baked = bake_weight(weight, spec, scale, zero_point)
    assert torch.equal(quantize(baked, spec, scale, zero_point), q)
    if method == "minmax":  # nothing clipped: error at most half a step
        assert ((fake - weight).abs() <= expand_to_weight(scale, spec, 32) / 2 + 1e-7).all()


def test_symmetric_ranges_and_asymmetric_zero_point():
    assert (QuantSpec(8, True).qmin, QuantSpec(8, True).qmax) == (-127, 127)
    assert (QuantSpec(4, False).qmin, QuantSpec(4, False).qmax) == (-8, 7)
    positive = torch.rand(4, 16) + 0.5  # all positive: asymmetric range still contains 0
    spec = QuantSpec(4, False, "per_channel")
    scale, zero_point = compute_qparams(positive, spec)
    assert (zero_point == spec.qmin).all()
    assert (quantize(torch.zeros(4, 16), spec, scale, zero_point) == zero_point).all()


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_zeros_stay_exactly_zero(spec):
    weight = heavy_tailed_weight()
    weight[:, ::3] = 0.0
    weight[2] = 0.0  # a fully pruned row
    scale, zero_point = compute_qparams(weight, spec, "mse")
    fake = fake_quantize(weight, spec, scale, zero_point)
    assert torch.equal(fake[weight == 0], torch.zeros_like(fake[weight == 0]))
    assert torch.isfinite(fake).all()


def test_straight_through_estimator_passes_gradients():
    spec = QuantSpec(4, True, "per_channel")
    weight = heavy_tailed_weight().requires_grad_(True)
    scale, zero_point = compute_qparams(weight, spec)
    fake_quantize(weight, spec, scale, zero_point).pow(2).sum().backward()
    # STE: d(fake)/d(weight) = 1, so the gradient is 2 * fake, not zero as round() would give
    assert torch.allclose(weight.grad, 2 * fake_quantize(weight.detach(), spec, scale, zero_point))

    # clipped values get no gradient; the (learnable) scale gets one
    weight.grad = None
    small_scale = (scale / 4).requires_grad_(True)
    fake_quantize(weight, spec, small_scale, zero_point).sum().backward()
    clipped = (weight.detach() / small_scale.detach()).round().abs() > spec.qmax
    assert clipped.any() and (weight.grad[clipped] == 0).all()
    assert torch.allclose(weight.grad[~clipped], torch.ones_like(weight.grad[~clipped]))
    assert small_scale.grad is not None and small_scale.grad.abs().sum() > 0


@pytest.mark.parametrize("spec", [QuantSpec(4, True, "per_tensor"), QuantSpec(3, False, "per_channel")], ids=str)
def test_mse_clipping_lowers_the_error(spec):
    weight = heavy_tailed_weight()
    errors = {}
    for method in ("minmax", "mse"):
        scale, zero_point = compute_qparams(weight, spec, method)
        errors[method] = (fake_quantize(weight, spec, scale, zero_point) - weight).pow(2).sum(dim=1)
    if spec.granularity == "per_channel":  # the full range is a candidate, so never worse for any scale
        assert (errors["mse"] <= errors["minmax"]).all()
    gain = 0.8 if spec.granularity == "per_tensor" else 1.0  # the outliers dominate per_tensor
    assert errors["mse"].sum() < gain * errors["minmax"].sum()


def test_bf16_weights_keep_their_dtype():
    weight = heavy_tailed_weight().bfloat16().requires_grad_(True)
    spec = QuantSpec(8, True, "per_channel")
    fake = fake_quantize(weight, spec, *compute_qparams(weight, spec))
    assert fake.dtype == torch.bfloat16
    fake.float().sum().backward()
    assert weight.grad.dtype == torch.bfloat16


def test_per_token_activation_quantization():
    x = torch.randn(2, 5, 16) * torch.arange(1, 6).view(1, 5, 1)
    spec = QuantSpec(8, True, "per_tensor")
    scale, zero_point = activation_qparams_per_token(x, spec)
    assert scale.shape == (2, 5, 1)
    fake = fake_quantize_activation(x, spec, scale, zero_point)
    steps = fake / scale
    assert torch.allclose(steps, steps.round(), atol=1e-4) and steps.round().abs().max() <= 127


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(bits=1), "bits"),
        (dict(bits=9), "bits"),
        (dict(granularity="per_row"), "granularity"),
        (dict(granularity="per_group"), "group_size"),
        (dict(granularity="per_channel", group_size=8), "group_size"),
    ],
)
def test_bad_specs(kwargs, field):
    with pytest.raises(ValueError, match=field):
        QuantSpec(**kwargs)


def test_group_size_must_divide_in_features():
    with pytest.raises(ValueError, match="group_size=12 does not divide in_features=32"):
        compute_qparams(torch.randn(4, 32), QuantSpec(4, True, "per_group", 12))
