"""QATCallback inside a real transformers.Trainer on tiny real models."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import Trainer, TrainerCallback

from conftest import LMDataset, tiny_gpt2, tiny_llama, training_args
from hf_compress import PruningCallback, PruningConfig, QATCallback, QATConfig
from hf_compress.quantization.callback import remove_activation_quantization
from hf_compress.quantization.grid import dequantize, fake_quantize, quantize
from hf_compress.targets import weight_out_in

torch.set_num_threads(1)


class Probe(TrainerCallback):
    """Records what the issue asks to hold during training: keys, parameter identity, gradients, optimizer groups."""

    def __init__(self, module_name: str):
        self.module_name = module_name
        self.keys, self.param_ids, self.grad_norms, self.group_sizes = [], [], [], []

    def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        weight = dict(model.named_modules())[self.module_name].weight
        self.grad_norms.append(0.0 if weight.grad is None else weight.grad.norm().item())
        self.group_sizes.append([len(group["params"]) for group in optimizer.param_groups])

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.keys.append(list(model.state_dict()))
        self.param_ids.append([id(p) for p in model.parameters()])


def train(model, qat_config=None, extra_callbacks=(), dataset=None, **arg_overrides):
    callbacks = list(extra_callbacks)
    qat = QATCallback(qat_config) if qat_config is not None else None
    if qat is not None:
        callbacks.append(qat)
    args = training_args(arg_overrides.pop("output_dir", "/tmp/hf_compress_qat_test"), **arg_overrides)
    trainer = Trainer(model=model, args=args, train_dataset=dataset or LMDataset(n=64))
    for callback in callbacks:
        trainer.add_callback(callback)  # joins the Trainer after construction, like a user adding it late
    trainer.train(resume_from_checkpoint=arg_overrides.get("resume_from_checkpoint"))
    return trainer, qat


def quantized_modules(model):
    return {name: module for name, module in model.named_modules() if hasattr(module, "hf_compress_qparams")}


def assert_on_grid(model):
    modules = quantized_modules(model)
    assert modules
    for name, module in modules.items():
        params = module.hf_compress_qparams
        weight = weight_out_in(module.weight.detach(), module)
        on_grid = dequantize(
            quantize(weight, params.spec, params.scale, params.zero_point),
            params.spec,
            params.scale,
            params.zero_point,
        )
        assert torch.equal(weight, on_grid), name
    return modules


@pytest.mark.parametrize(
    "factory, config",
    [
        (tiny_gpt2, QATConfig(weight_bits=8, granularity="per_channel")),
        (
            tiny_llama,
            QATConfig(weight_bits=4, symmetric=False, granularity="per_group", group_size=16, scale_method="mse"),
        ),
        (tiny_llama, QATConfig(weight_bits=4, granularity="per_group", group_size=8, quantizer="lsq")),
    ],
    ids=["gpt2-int8-channel", "llama-int4-group-asym-mse", "llama-int4-lsq"],
)
def test_qat_trains_with_live_references_and_bakes_weights_on_the_grid(tmp_path, factory, config):
    model = factory()
    keys_before = list(model.state_dict())
    ids_before = [id(p) for p in model.parameters()]
    probe = Probe("transformer.h.0.mlp.c_fc" if factory is tiny_gpt2 else "model.layers.0.mlp.down_proj")
    trainer, qat = train(model, config, [probe], output_dir=tmp_path, max_steps=8)

    # state_dict keys and parameter objects never changed, during or after training
    assert all(keys == keys_before for keys in probe.keys) and list(model.state_dict()) == keys_before
    assert all(ids == ids_before for ids in probe.param_ids)
    # the STE let gradients reach the real parameters through the fake-quantized weight
    assert all(norm > 0 for norm in probe.grad_norms)
    n_learned = len(qat.modules) if config.quantizer == "lsq" else 0
    trainer_groups = probe.group_sizes[0][:2]
    assert all(sizes == trainer_groups + ([n_learned] if n_learned else []) for sizes in probe.group_sizes)
    assert len(trainer.optimizer.param_groups) == 2  # the learned-scale group leaves with the training

    modules = assert_on_grid(model)
    assert set(modules) == set(qat.modules) and not any("lm_head" in name for name in modules)
    described = model.config.hf_compress_quantization
    assert described["weights"] == config.weight_spec().to_dict() and described["modules"] == list(modules)
    json.dumps(described)  # plain, serialisable
    # no training hook is left: the in-memory model computes with exactly its (baked) weights, like an export
    module = next(iter(modules.values()))
    assert not module._forward_pre_hooks and not module._forward_hooks
    inputs = LMDataset(n=2)[0]["input_ids"][None]
    copy = factory()
    copy.load_state_dict(model.state_dict())
    model.eval(), copy.eval()
    assert torch.equal(model(inputs).logits, copy(inputs).logits)


def test_lsq_scales_are_learned():
    model = tiny_llama()
    config = QATConfig(weight_bits=4, granularity="per_group", group_size=8, quantizer="lsq", scale_learning_rate=1e-2)
    qat = QATCallback(config)
    initial = {}

    class Snapshot(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 1:  # scales were (re)initialised at step 0
                initial.update({n: r.quantizer.log_scale.detach().clone() for n, r in qat.modules.items()})

    train(model, None, [Snapshot(), qat], max_steps=6)
    for name, module in quantized_modules(model).items():
        assert not torch.allclose(module.hf_compress_qparams.scale.log(), initial[name]), name


def test_start_delays_fake_quantization():
    plain, _ = train(tiny_gpt2(), None, logging_steps=1, max_steps=8)
    delayed, _ = train(tiny_gpt2(), QATConfig(weight_bits=2, start=4), logging_steps=1, max_steps=8)
    losses = [[h["loss"] for h in trainer.state.log_history if "loss" in h] for trainer in (plain, delayed)]
    assert losses[0][:4] == losses[1][:4]  # float fine-tuning first
    assert losses[0][4] != losses[1][4]  # then 2-bit weights change the forward pass


def test_static_activation_observers_freeze_and_stay_active(tmp_path):
    config = QATConfig(activations="per_tensor", freeze_observers=0.5, exclude=["attn"])
    seen = []

    class RecordRange(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            observer = qat.modules["transformer.h.0.mlp.c_fc"].observer
            seen.append((observer.low.item(), observer.high.item(), observer.frozen))

    model = tiny_gpt2()
    qat = QATCallback(config)
    train(model, None, [qat, RecordRange()], max_steps=8, output_dir=tmp_path)
    assert [frozen for *_, frozen in seen] == [False] * 4 + [True] * 4
    assert seen[0][:2] != seen[3][:2] and len({values[:2] for values in seen[4:]}) == 1

    module = dict(model.named_modules())["transformer.h.0.mlp.c_fc"]
    params = module.hf_compress_act_qparams
    assert not params.dynamic and int(params.zero_point) == 0
    assert params.scale.item() == pytest.approx(max(-seen[-1][0], seen[-1][1]) / 127, rel=1e-6)
    inputs_seen = []
    module.register_forward_hook(lambda m, args, out: inputs_seen.append(args[0]))
    inputs = LMDataset(n=2)[0]["input_ids"][None]
    model.eval()
    quantized_logits = model(inputs).logits
    steps = inputs_seen[0] / params.scale
    assert torch.allclose(steps, steps.round(), atol=1e-3)  # the input reached the layer on the int8 grid
    for quantized in quantized_modules(model).values():
        remove_activation_quantization(quantized)
    assert not torch.allclose(model(inputs).logits, quantized_logits)
    assert "attn" not in " ".join(quantized_modules(model))


def test_per_token_activations_and_cpu_bf16_autocast(tmp_path):
    model = tiny_llama()
    _, qat = train(
        model, QATConfig(activations="per_token", weight_bits=8), max_steps=4, bf16=True, output_dir=tmp_path
    )
    assert_on_grid(model)
    assert model.model.layers[0].mlp.up_proj.weight.dtype == torch.float32
    assert model.model.layers[0].mlp.up_proj.hf_compress_act_qparams.dynamic
    assert model.config.hf_compress_quantization["activations"]["granularity"] == "per_token"


def test_save_and_resume_restore_scales_observers_and_optimizer(tmp_path, monkeypatch):
    config = dict(weight_bits=4, granularity="per_group", group_size=8, quantizer="lsq", activations="per_tensor")
    common = dict(max_steps=10, save_strategy="steps", save_steps=5, output_dir=tmp_path / "a")
    straight = tiny_llama()
    train(straight, QATConfig(**config, freeze_observers=0.8), **common)

    checkpoint = tmp_path / "a" / "checkpoint-5"
    optimizer_state = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    assert len(optimizer_state["param_groups"]) == 2  # the Trainer's own groups only
    saved = load_file(checkpoint / "hf_compress_qat.safetensors")
    assert any(key.endswith("quantizer.log_scale") for key in saved) and any(".observer.low" in k for k in saved)
    assert any(key.startswith("optimizer.0.exp_avg") for key in saved)
    assert list(load_file(checkpoint / "model.safetensors")) == list(
        load_file(tmp_path / "a" / "checkpoint-10" / "model.safetensors")
    )

    resumed = tiny_llama()
    train(resumed, QATConfig(**config, freeze_observers=0.8), **common, resume_from_checkpoint=str(checkpoint))
    straight_modules, resumed_modules = quantized_modules(straight), quantized_modules(resumed)
    for name, module in straight_modules.items():
        other = resumed_modules[name]
        assert torch.allclose(module.weight, other.weight, atol=1e-6), name
        assert torch.allclose(module.hf_compress_qparams.scale, other.hf_compress_qparams.scale, atol=1e-7), name
        assert torch.allclose(module.hf_compress_act_qparams.scale, other.hf_compress_act_qparams.scale), name

    # without the QAT state the resume is refused, naming the folder and the file; started fresh on purpose, it differs
    os.remove(checkpoint / "hf_compress_qat.json")
    with pytest.raises(ValueError, match=r"checkpoint-\d+.*hf_compress_qat\.json"):
        train(
            tiny_llama(), QATConfig(**config, freeze_observers=0.8), **common, resume_from_checkpoint=str(checkpoint)
        )
    monkeypatch.setenv("HF_COMPRESS_ALLOW_RESUME_CONFIG_CHANGE", "1")
    fresh = tiny_llama()
    train(fresh, QATConfig(**config, freeze_observers=0.8), **common, resume_from_checkpoint=str(checkpoint))
    name = "model.layers.0.mlp.down_proj"
    assert not torch.allclose(
        quantized_modules(fresh)[name].hf_compress_qparams.scale, straight_modules[name].hf_compress_qparams.scale
    )


@pytest.mark.parametrize("symmetric", [True, False])
def test_pruning_zeros_stay_zero_through_qat(tmp_path, symmetric):
    model = tiny_llama()
    pruning = PruningCallback(PruningConfig(target_sparsity=0.5, end=0.5, frequency=2))
    qat_config = QATConfig(weight_bits=4, symmetric=symmetric, granularity="per_group", group_size=16)
    zeros_in_forward = []

    class CheckForward(TrainerCallback):  # the fake-quantized weight used in the forward keeps pruned zeros
        def on_step_end(self, args, state, control, model=None, **kwargs):
            module = model.model.layers[1].mlp.gate_proj
            weight = module.weight.detach()
            record = qat.modules["model.layers.1.mlp.gate_proj"]
            fake = record.quantizer.fake_quantize(weight)
            zeros_in_forward.append(bool((fake[weight == 0] == 0).all()) and bool((weight == 0).any()))

    qat = QATCallback(qat_config)
    train(model, None, [pruning, qat, CheckForward()], max_steps=10, output_dir=tmp_path)
    assert zeros_in_forward[-1] and all(zeros_in_forward[4:])
    for name, module in assert_on_grid(model).items():
        weight = weight_out_in(module.weight.detach(), module)
        mask = pruning.masks[name].to(weight.device)
        assert (weight[~mask] == 0).all(), name
        assert (weight == 0).float().mean() >= 0.49, name
        params = module.hf_compress_qparams
        zero_codes = quantize(weight, params.spec, params.scale, params.zero_point)[~mask]
        expanded = params.zero_point.repeat_interleave(16, dim=1)[~mask].to(torch.int8)
        assert torch.equal(zero_codes, expanded)  # the integers of pruned weights are the zero point


class ScaledLinear(nn.Linear):
    """A Linear subclass with its own forward: weights can be fake-quantized, inputs cannot be intercepted safely."""

    def forward(self, x):
        return super().forward(x) * 1.0


def test_bad_input_raises_before_any_step(tmp_path):
    for kwargs, field in [
        (dict(weight_bits=9), "weight_bits"),
        (dict(weight_bits=1), "weight_bits"),
        (dict(granularity="per_group"), "group_size"),
        (dict(scale_method="percentile"), "scale_method"),
        (dict(quantizer="lsqq"), "quantizer"),
        (dict(activations="per_channel"), "activations"),
        (dict(activations="per_tensor", start=5, freeze_observers=5), "freeze_observers"),
    ]:
        with pytest.raises(ValueError, match=field):
            QATConfig(**kwargs)

    model = tiny_gpt2()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"group_size=12 does not divide in_features=32 of module 'transformer.h.0"):
        train(model, QATConfig(weight_bits=4, granularity="per_group", group_size=12), output_dir=tmp_path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="start resolves to step 20"):
        train(tiny_gpt2(), QATConfig(start=20), output_dir=tmp_path)

    model = tiny_llama()
    model.model.layers[0].mlp.up_proj = ScaledLinear(32, 64, bias=False)
    with pytest.raises(
        ValueError, match=r"activations='per_token': cannot quantize the input of model.layers.0.mlp.up_proj"
    ):
        train(model, QATConfig(activations="per_token"), output_dir=tmp_path)
    train(model, QATConfig(), max_steps=2, output_dir=tmp_path)  # weights only: fine
    assert_on_grid(model)


def test_fake_quantize_in_forward_matches_grid_function():
    """During training each targeted layer computes with fake_quantize(weight) exactly."""
    model = tiny_gpt2()
    config = QATConfig(weight_bits=3, symmetric=False)
    outputs = {}

    class Compare(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            module = model.transformer.h[0].mlp.c_fc
            x = torch.randn(3, 32)
            hooked = module(x)
            weight = weight_out_in(module.weight.detach(), module)
            spec = config.weight_spec()
            from hf_compress.quantization.grid import compute_qparams

            expected = x @ fake_quantize(weight, spec, *compute_qparams(weight, spec)).t() + module.bias
            outputs["diff"] = (hooked - expected).abs().max().item()
            outputs["float_diff"] = (hooked - (x @ weight.t() + module.bias)).abs().max().item()

    train(model, config, [Compare()], max_steps=2)
    assert outputs["diff"] < 1e-5 and outputs["float_diff"] > 1e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_autocast_and_bf16_weights(tmp_path):
    config = QATConfig(weight_bits=4, granularity="per_group", group_size=8, quantizer="lsq", activations="per_tensor")
    model = tiny_llama()
    train(model, config, max_steps=6, bf16=True, use_cpu=False, output_dir=tmp_path)
    assert model.model.layers[0].mlp.up_proj.weight.is_cuda
    assert model.model.layers[0].mlp.up_proj.weight.dtype == torch.float32  # fp32 master weights under autocast
    assert_on_grid(model)
    inputs = LMDataset(n=2)[0]["input_ids"][None].cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert torch.isfinite(model(inputs).logits).all()

    # a model held in bf16 itself: the grid math runs in fp32 and the baked weights are the grid values in bf16
    model = tiny_llama().to(torch.bfloat16)
    train(
        model,
        QATConfig(weight_bits=8, activations="per_token"),
        max_steps=4,
        bf16=True,
        use_cpu=False,
        output_dir=tmp_path,
    )
    for name, module in quantized_modules(model).items():
        params = module.hf_compress_qparams
        weight = weight_out_in(module.weight.detach(), module)
        assert weight.dtype == torch.bfloat16
        q = quantize(weight, params.spec, params.scale, params.zero_point)
        expected = dequantize(q, params.spec, params.scale, params.zero_point, torch.bfloat16)
        assert torch.equal(weight, expected), name
