"""Quantization-aware training without a Trainer: :func:`prepare_qat_` and :func:`convert_` (torchao-style).

``prepare_qat_(model, config)`` gives each targeted Linear/Conv1D a forward pre-hook that, for that module's forward
only, puts the fake-quantized weight (a differentiable function of the real parameter) in place of the parameter, and
a forward hook that puts the parameter back. The optimizer and DDP keep their references, gradients reach the real
parameter through the straight-through estimator, and ``state_dict`` keys never change. Input activations, if
configured, are fake-quantized by another pre-hook. ``convert_(model)`` bakes the weights onto the grid and leaves
``module.hf_compress_qparams`` (and ``hf_compress_act_qparams``) for :func:`hf_compress.export`.

A hand-written loop:

```python
>>> import torch
>>> from transformers import GPT2Config, GPT2LMHeadModel
>>> from hf_compress import QATConfig, convert_, prepare_qat_
>>> model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=16))
>>> qat = prepare_qat_(model, QATConfig(weight_bits=4))
>>> optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
>>> for _ in range(2):
...     loss = model(torch.randint(0, 64, (2, 8)), labels=torch.randint(0, 64, (2, 8))).loss
...     loss.backward(); optimizer.step(); optimizer.zero_grad()
>>> _ = convert_(model)
>>> model.transformer.h[0].mlp.c_fc.hf_compress_qparams.spec.bits
4

```
Learned scales (``quantizer="lsq"``) are in ``qat.learnable_parameters()``; give them to the optimizer too.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hf_compress.distributed import is_sharded, weights_swappable_in_forward
from hf_compress.peft_support import lora_hooks as peft_lora_hooks
from hf_compress.quantization.config import QATConfig
from hf_compress.quantization.grid import (
    ActivationQuantParams,
    QuantSpec,
    WeightQuantParams,
    activation_qparams_per_token,
    bake_weight,
    fake_quantize_activation,
)
from hf_compress.quantization.observers import EMAMinMaxObserver
from hf_compress.registry import get_registry
from hf_compress.targets import conv1d_class, find_target_modules, in_out_features, is_conv1d, weight_out_in

logger = logging.getLogger(__name__)

SUPPORTED_LAYER_NAMES = "torch.nn.Linear, transformers.pytorch_utils.Conv1D"

# model -> its QAT state, so convert_(model) needs nothing but the model
_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class _QuantizedModule:
    """Runtime record of one targeted module (never stored on the module itself)."""

    name: str
    module: nn.Module
    quantizer: Any
    observer: EMAMinMaxObserver | None = None
    handles: list = field(default_factory=list)
    saved_weight: nn.Parameter | None = None


def prepare_qat_(model: nn.Module, config: QATConfig | None = None, active: bool = True) -> FakeQuantizedModel:
    """Fake-quantize ``model``'s targeted weights (and activations) from now on, in place; returns the QAT state.

    Args:
        model (`nn.Module`): a transformers model (or a PeftModel: W + BA is quantized).
        config (`QATConfig`, *optional*): defaults to int8 symmetric per-channel weights.
        active (`bool`, *optional*, defaults to `True`): with False, hooks are installed but quantization waits for
            ``.activate()`` (the callback's ``start``).

    Raises:
        ValueError: no module to quantize, or a module the config cannot handle; the model is then left as it was.
    """
    if model in _PREPARED:
        raise ValueError("prepare_qat_: this model is already prepared for QAT; call convert_(model) first")
    state = FakeQuantizedModel(model, config if config is not None else QATConfig())
    if active:
        state.activate()
    _PREPARED[model] = state
    return state


def convert_(model: nn.Module) -> nn.Module:
    """Finish QAT on a model :func:`prepare_qat_` prepared: bake the weights onto the grid, remove the training
    hooks, set ``model.config.hf_compress_quantization``; returns the model."""
    state = _PREPARED.pop(model, None)
    if state is None:
        raise ValueError("convert_: this model was not prepared with prepare_qat_(model, config)")
    state.convert()
    return model


def release_(model: nn.Module) -> None:
    """Remove the training hooks of a prepared model without baking (its weights stay as trained)."""
    state = _PREPARED.pop(model, None)
    if state is not None:
        state.remove_hooks()


class FakeQuantizedModel:
    """The QAT state of one model: its quantized modules, their quantizers and observers, and the hooks."""

    def __init__(self, model: nn.Module, config: QATConfig) -> None:
        self.model = model
        self.config = config
        self.active = False
        self.observers_frozen = False
        targets = find_target_modules(model, config.targets, config.exclude)
        if not targets:
            raise ValueError("targets: QAT found no Linear/Conv1D module to quantize in the model")
        if not weights_swappable_in_forward(module.weight for module in targets.values()):
            raise ValueError(
                "QATCallback / prepare_qat_: not supported under DeepSpeed ZeRO-3, whose partitioned weights cannot be "
                "swapped for fake-quantized ones in the forward; use ZeRO-2 (or DDP / FSDP2)"
            )
        spec = config.weight_spec()
        for name, module in targets.items():
            _check_module(name, module, spec, config.activations)
        quantizer_cls = get_registry().get("quantizer", config.quantizer)
        self.modules: dict[str, _QuantizedModule] = {}
        for name, module in targets.items():
            quantizer = quantizer_cls(spec, config.scale_method)
            quantizer.reset(weight_out_in(module.weight.detach(), module))
            observer = None
            if config.activations == "per_tensor":
                observer = EMAMinMaxObserver(config.activation_spec(), config.observer_momentum)
            self.modules[name] = _QuantizedModule(name, module, quantizer, observer)
        peft_lora_hooks.attach_qat(model, targets)  # PEFT: quantize W + BA, not W alone (no-op for other models)
        for record in self.modules.values():
            self.install_hooks(record)

    def install_hooks(self, record: _QuantizedModule) -> None:
        module = record.module
        if self.config.activations is not None:
            remove_activation_quantization(module)
            record.handles.append(
                module.register_forward_pre_hook(self._make_activation_hook(record), with_kwargs=True)
            )
        record.handles.append(module.register_forward_pre_hook(self._make_weight_hook(record)))
        record.handles.append(module.register_forward_hook(_make_restore_hook(record), always_call=True))

    def _make_weight_hook(self, record: _QuantizedModule):
        def swap_in_fake_quantized_weight(module, args):
            if not self.active:
                return None
            weight = module._parameters["weight"]
            fake = record.quantizer.fake_quantize(weight_out_in(weight, module))
            record.saved_weight = weight
            # A plain tensor in place of the Parameter for this forward only; the restore hook puts it back.
            module._parameters["weight"] = fake.t() if is_conv1d(module) else fake
            return None

        return swap_in_fake_quantized_weight

    def _make_activation_hook(self, record: _QuantizedModule):
        spec = self.config.activation_spec()

        def fake_quantize_input(module, args, kwargs):
            if not self.active:
                return None
            args, kwargs, x = _split_input(record.name, args, kwargs)
            if record.observer is not None:
                if module.training:
                    record.observer.observe(x)
                scale, zero_point = record.observer.qparams()
            else:
                scale, zero_point = activation_qparams_per_token(x, spec)
            return _replace_input(args, kwargs, fake_quantize_activation(x, spec, scale, zero_point))

        return fake_quantize_input

    def activate(self) -> None:
        for record in self.modules.values():
            record.quantizer.reset(weight_out_in(record.module.weight.detach(), record.module))
        self.active = True

    def synchronize_observers(self) -> None:
        for record in self.modules.values():
            if record.observer is not None and record.observer.initialized:
                record.observer.synchronize()

    def freeze_observers(self) -> None:
        self.synchronize_observers()
        for record in self.modules.values():
            if record.observer is not None:
                record.observer.frozen = True
        self.observers_frozen = True

    def learnable_parameters(self) -> list[nn.Parameter]:
        return [param for record in self.modules.values() for param in record.quantizer.learnable_parameters()]

    @torch.no_grad()
    def bake(self) -> None:
        if self.model is not None:  # PEFT: fold the LoRA update into the base weight first, so the sum is baked
            peft_lora_hooks.fold_lora_updates_(self.model, {name: r.module for name, r in self.modules.items()})
        spec = self.config.weight_spec()
        activation_spec = self.config.activation_spec()
        for name, record in self.modules.items():
            module = record.module
            weight = weight_out_in(module.weight, module)
            scale, zero_point = record.quantizer.qparams(weight.detach())
            baked = bake_weight(weight.detach(), spec, scale, zero_point)
            if not torch.equal(baked[weight == 0], torch.zeros_like(baked[weight == 0])):
                raise RuntimeError(f"QAT baking moved zero weights of {name} off zero; the grid must contain 0")
            weight.copy_(baked)
            module.hf_compress_qparams = WeightQuantParams(spec, scale.detach().float(), zero_point.detach())
            if activation_spec is None:
                continue
            if record.observer is None:
                params = ActivationQuantParams(activation_spec, dynamic=True)
            elif record.observer.initialized:
                act_scale, act_zero_point = record.observer.qparams()
                params = ActivationQuantParams(activation_spec, False, act_scale, act_zero_point)
            else:
                logger.warning("hf_compress QAT: %s never saw an activation; its inputs stay unquantized", name)
                continue
            module.hf_compress_act_qparams = params
            module.hf_compress_act_hook = module.register_forward_pre_hook(quantize_input_pre_hook, with_kwargs=True)
        if self.model is not None and hasattr(self.model, "config"):
            self.model.config.hf_compress_quantization = self.describe()

    def describe(self) -> dict:
        """The plain dict stored as ``model.config.hf_compress_quantization`` at train end."""
        config = self.config
        activations = None
        if config.activations is not None:
            activations = {"mode": config.activations, "dynamic": config.activations == "per_token"}
            activations.update(config.activation_spec().to_dict())
            activations["granularity"] = "per_token" if config.activations == "per_token" else "per_tensor"
        return {
            "method": "qat",
            "quantizer": config.quantizer,
            "scale_method": config.scale_method,
            "weights": config.weight_spec().to_dict(),
            "activations": activations,
            "modules": list(self.modules),
        }

    def convert(self) -> None:
        if not self.active:
            self.activate()
        if self.config.activations == "per_tensor" and not self.observers_frozen:
            self.freeze_observers()
        self.bake()
        self.remove_hooks()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors: dict[str, torch.Tensor] = {}
        for name, record in self.modules.items():
            for key, value in record.quantizer.state_tensors().items():
                tensors[f"{name}.quantizer.{key}"] = value
            if record.observer is not None:
                for key, value in record.observer.state_tensors().items():
                    tensors[f"{name}.observer.{key}"] = value
        return tensors

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, record in self.modules.items():
            device = record.module.weight.device
            quantizer_state = _with_prefix(tensors, f"{name}.quantizer.")
            record.quantizer.load_state_tensors({k: v.to(device) for k, v in quantizer_state.items()})
            if record.observer is not None:
                record.observer.load_state_tensors(_with_prefix(tensors, f"{name}.observer."), device)

    def remove_hooks(self) -> None:
        """Remove the training hooks (baked attributes and activation hooks stay)."""
        for record in self.modules.values():
            for handle in record.handles:
                handle.remove()
            record.handles.clear()
            if record.saved_weight is not None:
                record.module._parameters["weight"] = record.saved_weight
                record.saved_weight = None


def _with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}


def _check_module(name: str, module: nn.Module, spec: QuantSpec, activations: str | None) -> None:
    weight = module.weight
    if is_sharded(weight):
        raise ValueError(
            f"targets: {name} has FSDP-sharded (DTensor) weights, which QATCallback cannot fake-quantize; "
            "allowed: DDP or single-process training"
        )
    if not weight.dtype.is_floating_point:
        raise ValueError(f"targets: {name} has a {weight.dtype} weight; QAT needs float weights (fp32, bf16, fp16)")
    in_features, out_features = in_out_features(module)
    spec.check_shape(out_features, in_features, where=f"module {name!r}")
    supported_forwards = tuple(cls.forward for cls in (nn.Linear, conv1d_class()) if cls is not None)
    if activations is not None and type(module).forward not in supported_forwards:
        raise ValueError(
            f"activations={activations!r}: cannot quantize the input of {name} ({type(module).__module__}."
            f"{type(module).__qualname__}), which overrides forward; allowed layer types: {SUPPORTED_LAYER_NAMES} "
            "(or exclude the module, or set activations=None)"
        )


def _make_restore_hook(record: _QuantizedModule):
    def restore_weight(module, args, output):
        if record.saved_weight is not None:
            module._parameters["weight"] = record.saved_weight
            record.saved_weight = None
        return None

    return restore_weight


def _split_input(name: str, args: tuple, kwargs: dict) -> tuple[tuple, dict, torch.Tensor]:
    if args:
        x = args[0]
    elif "input" in kwargs:
        x = kwargs["input"]
    else:
        raise ValueError(f"activations: {name} was called without an input tensor; cannot quantize its input")
    if not torch.is_tensor(x) or not x.dtype.is_floating_point:
        raise ValueError(
            f"activations: the input of {name} is {getattr(x, 'dtype', type(x).__name__)}; activation quantization "
            "handles floating-point inputs only"
        )
    return args, kwargs, x


def _replace_input(args: tuple, kwargs: dict, x: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (x, *args[1:]), kwargs
    return args, {**kwargs, "input": x}


def quantize_input_pre_hook(module: nn.Module, args: tuple, kwargs: dict):
    """Forward pre-hook left on quantized modules after QAT: fake-quantizes the input with
    ``module.hf_compress_act_qparams`` (per-token dynamic, or static per-tensor)."""
    params: ActivationQuantParams = module.hf_compress_act_qparams
    args, kwargs, x = _split_input(type(module).__name__, args, kwargs)
    if params.dynamic:
        scale, zero_point = activation_qparams_per_token(x, params.spec)
    else:
        scale, zero_point = params.scale.to(x.device), params.zero_point.to(x.device)
    return _replace_input(args, kwargs, fake_quantize_activation(x, params.spec, scale, zero_point))


def remove_activation_quantization(module: nn.Module) -> None:
    """Remove the activation pre-hook and ``hf_compress_act_qparams`` that QAT left on ``module`` (export does this)."""
    handle = getattr(module, "hf_compress_act_hook", None)
    if handle is not None:
        handle.remove()
        del module.hf_compress_act_hook
    if hasattr(module, "hf_compress_act_qparams"):
        del module.hf_compress_act_qparams
