"""Quantization-aware training as a Trainer callback: :class:`QATCallback`.

The callback joins a live Trainer without replacing modules or parameters. Each targeted Linear/Conv1D gets a
forward pre-hook that, for the duration of that module's forward only, puts the fake-quantized weight (a
differentiable function of the real parameter) in place of the parameter, and a forward hook that puts the parameter
back. The optimizer and DDP keep their references, gradients reach the real parameter through the straight-through
estimator, and ``state_dict`` keys never change. Input activations, if configured, are fake-quantized by another
pre-hook. At train end the weights are baked onto the grid and every quantized module carries
``module.hf_compress_qparams`` (a :class:`~hf_compress.quantization.grid.WeightQuantParams`); activation
quantization stays active through ``module.hf_compress_act_qparams`` until export.

Events:

- ``on_train_begin``: checks (bits, group_size against every module's in_features, layer types for activations,
  ``start`` / ``freeze_observers`` once fractions are resolved) raise a ValueError before any step; quantizers are
  built, learned scales join the live optimizer as one more param group (the LR scheduler gets a matching entry);
  on resume, scales, observers and that group's optimizer state come back from ``hf_compress_qat.*``.
- ``on_step_begin``: fake quantization starts at ``start`` (scales initialised from the weights then); static
  observers freeze at ``freeze_observers`` (averaged across ranks first).
- ``on_pre_optimizer_step``: gradients of learned scales are averaged across DDP ranks (they are not DDP parameters).
- ``on_save``: quantizer / observer tensors and the learned-scale optimizer state go to ``hf_compress_qat.*`` in the
  checkpoint; ``optimizer.pt`` and ``scheduler.pt`` keep only the Trainer's own groups, so a resumed Trainer loads
  them before this callback runs.
- ``on_train_end``: weights are baked, hooks and the extra param group removed,
  ``model.config.hf_compress_quantization`` set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback

from hf_compress import distributed
from hf_compress.checkpoint_state import checkpoint_dir, load_state, resume_folder, save_state
from hf_compress.config_base import resolve_step
from hf_compress.distributed import all_reduce_mean_, is_sharded, unwrap_model
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
from hf_compress.targets import Conv1D, find_target_modules, in_out_features, is_conv1d, weight_out_in

logger = logging.getLogger(__name__)

STATE_NAME = "hf_compress_qat"
# Marks the optimizer param group of learned quantization parameters (kept out of the Trainer's optimizer.pt).
GROUP_MARKER = "hf_compress_qat"
SUPPORTED_FORWARDS = tuple(cls.forward for cls in (nn.Linear, Conv1D) if isinstance(cls, type))
SUPPORTED_LAYER_NAMES = "torch.nn.Linear, transformers.pytorch_utils.Conv1D"


@dataclass
class _QuantizedModule:
    """Runtime record of one targeted module (never stored on the module itself)."""

    name: str
    module: nn.Module
    quantizer: Any
    observer: EMAMinMaxObserver | None = None
    handles: list = field(default_factory=list)
    saved_weight: nn.Parameter | None = None


class QATCallback(TrainerCallback):
    """Fake-quantizes the targeted weights (and optionally input activations) while the Trainer trains.

    Args:
        config (`QATConfig`, *optional*): what to quantize and when; defaults to int8 symmetric per-channel weights.

    After training the model's targeted weights lie exactly on the grid, each quantized module has a plain attribute
    ``hf_compress_qparams`` and ``model.config.hf_compress_quantization`` describes what was applied; pass the model
    to :func:`hf_compress.export`.

    Example:

    ```python
    from transformers import Trainer
    from hf_compress import QATCallback, QATConfig

    trainer = Trainer(model=model, args=args, train_dataset=train_dataset)
    trainer.add_callback(QATCallback(QATConfig(weight_bits=4, granularity="per_group", group_size=32, start=0.1)))
    trainer.train()
    model.model.layers[0].mlp.down_proj.hf_compress_qparams.scale.shape  # [out, in // 32]
    ```
    """

    def __init__(self, config: QATConfig | None = None) -> None:
        self.config = config if config is not None else QATConfig()
        self.modules: dict[str, _QuantizedModule] = {}
        self.active = False
        self.observers_frozen = False
        self.start_step = 0
        self.freeze_step: int | None = None
        self._model: nn.Module | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        self._param_group: dict | None = None
        self._state_dict_hook = None
        self._scheduler = None

    # ------------------------------------------------------------------ Trainer events
    def on_train_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kwargs):
        self._teardown()
        model = unwrap_model(model)
        self._model = model
        config = self.config
        total_steps = state.max_steps
        self.start_step = resolve_step(config.start, total_steps)
        if self.start_step >= total_steps:
            raise ValueError(
                f"start resolves to step {self.start_step}, at or after the end of training (max_steps={total_steps}); "
                "allowed: a step before max_steps or a fraction below 1.0"
            )
        self.freeze_step = None
        if config.activations == "per_tensor":
            self.freeze_step = resolve_step(config.freeze_observers, total_steps)
            if self.freeze_step <= self.start_step:
                raise ValueError(
                    f"freeze_observers resolves to step {self.freeze_step}, not after start (step {self.start_step}); "
                    "the activation observers need at least one step to observe"
                )
        targets = find_target_modules(model, config.targets, config.exclude)
        if not targets:
            raise ValueError("targets: QATCallback found no Linear/Conv1D module to quantize in the model")
        if not distributed.weights_swappable_in_forward(module.weight for module in targets.values()):
            raise ValueError(
                "QATCallback: not supported under DeepSpeed ZeRO-3, whose partitioned weights cannot be swapped for "
                "fake-quantized ones in the forward; use ZeRO-2 (or DDP / FSDP2)"
            )
        peft_lora_hooks.attach_qat(model, targets)  # PEFT: quantize W + BA, not W alone (no-op for other models)
        spec = config.weight_spec()
        quantizer_cls = get_registry().get("quantizer", config.quantizer)
        self.modules = {}
        for name, module in targets.items():
            _check_module(name, module, spec, config.activations)
            quantizer = quantizer_cls(spec, config.scale_method)
            quantizer.reset(weight_out_in(module.weight.detach(), module))
            observer = None
            if config.activations == "per_tensor":
                observer = EMAMinMaxObserver(config.activation_spec(), config.observer_momentum)
            self.modules[name] = _QuantizedModule(name, module, quantizer, observer)

        self.active = False
        self.observers_frozen = False
        restored = self._restore(resume_folder(args, state))
        self._join_optimizer(args, optimizer, lr_scheduler, restored)
        for record in self.modules.values():
            self._install_hooks(record)
        logger.info(
            "hf_compress QAT: %d modules, %s, starting at step %d",
            len(self.modules),
            spec,
            self.start_step,
        )

    def on_step_begin(self, args, state, control, **kwargs):
        if not self.active and state.global_step >= self.start_step:
            self._activate()
            logger.info("hf_compress QAT: fake quantization active from step %d", state.global_step)
        if self.freeze_step is not None and not self.observers_frozen and state.global_step >= self.freeze_step:
            self._freeze_observers()
            logger.info("hf_compress QAT: activation observers frozen at step %d", state.global_step)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        # Learned quantization parameters are not DDP parameters: average their gradients here.
        params = self._learnable_parameters()
        if not params:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        all_reduce_mean_(flat)
        offset = 0
        for param in params:
            param.grad = flat[offset : offset + param.numel()].view_as(param).clone()
            offset += param.numel()

    def on_optimizer_step(self, args, state, control, **kwargs):
        # The Trainer zeroes model.parameters() only.
        for param in self._learnable_parameters():
            param.grad = None

    def on_save(self, args, state, control, **kwargs):
        if not self.modules:
            return
        if self.freeze_step is not None and not self.observers_frozen:
            self._synchronize_observers()
        tensors: dict[str, torch.Tensor] = {}
        for name, record in self.modules.items():
            for key, value in record.quantizer.state_tensors().items():
                tensors[f"{name}.quantizer.{key}"] = value
            if record.observer is not None:
                for key, value in record.observer.state_tensors().items():
                    tensors[f"{name}.observer.{key}"] = value
        optimizer_scalars = {}
        if self._optimizer is not None:
            for index, param in enumerate(self._learnable_parameters()):
                for key, value in self._optimizer.state.get(param, {}).items():
                    if torch.is_tensor(value):
                        tensors[f"optimizer.{index}.{key}"] = value
                    else:
                        optimizer_scalars[f"{index}.{key}"] = value
        meta = {
            "config": self.config.to_dict(),
            "active": self.active,
            "observers_frozen": self.observers_frozen,
            "modules": list(self.modules),
            "optimizer_scalars": optimizer_scalars,
        }
        save_state(checkpoint_dir(args, state), STATE_NAME, tensors, meta)

    def on_train_end(self, args, state, control, **kwargs):
        if not self.modules:
            return
        if not self.active:
            logger.warning(
                "hf_compress QAT: training ended before fake quantization started (start=%r); the weights are "
                "quantized post-training instead",
                self.config.start,
            )
            self._activate()
        if self.freeze_step is not None and not self.observers_frozen:
            self._freeze_observers()
        self._bake()
        self._teardown()

    # ------------------------------------------------------------------ set-up
    def _restore(self, folder: str | None) -> dict | None:
        """Load quantizer and observer state from a resumed checkpoint; returns the stored optimizer state."""
        if folder is None:
            return None
        stored = load_state(folder, STATE_NAME)
        if stored is None:
            logger.info("hf_compress QAT: %s holds no QAT state; QAT starts fresh", folder)
            return None
        tensors, meta = stored
        if meta["modules"] != list(self.modules):
            raise ValueError(
                f"the checkpoint {folder} was trained with QAT on modules {meta['modules'][:4]}..., but targets/exclude "
                f"now select {list(self.modules)[:4]}...; use the same targets to resume"
            )
        if meta["config"] != self.config.to_dict():
            logger.warning("hf_compress QAT: the resumed checkpoint used a different QATConfig: %s", meta["config"])
        for name, record in self.modules.items():
            device = record.module.weight.device
            quantizer_state = _with_prefix(tensors, f"{name}.quantizer.")
            record.quantizer.load_state_tensors({k: v.to(device) for k, v in quantizer_state.items()})
            if record.observer is not None:
                record.observer.load_state_tensors(_with_prefix(tensors, f"{name}.observer."), device)
        self.active = bool(meta["active"])
        self.observers_frozen = bool(meta["observers_frozen"])
        return {"tensors": _with_prefix(tensors, "optimizer."), "scalars": meta.get("optimizer_scalars", {})}

    def _join_optimizer(self, args, optimizer, lr_scheduler, restored: dict | None) -> None:
        params = self._learnable_parameters()
        if not params:
            return
        if not distributed.gradients_visible_to_callbacks(record.module.weight for record in self.modules.values()):
            raise ValueError(
                f"quantizer={self.config.quantizer!r} learns scales, whose gradients must be averaged across ranks "
                "before the step; DeepSpeed ZeRO steps inside backward, before any callback event. Use "
                "quantizer='int' under DeepSpeed"
            )
        inner = optimizer
        while isinstance(getattr(inner, "optimizer", None), torch.optim.Optimizer):  # accelerate's wrapper
            inner = inner.optimizer
        if not isinstance(inner, torch.optim.Optimizer):
            raise ValueError(
                f"quantizer={self.config.quantizer!r} learns scales, which must join the Trainer's torch optimizer; "
                f"got {type(optimizer).__name__}. Allowed: a torch.optim.Optimizer (or use quantizer='int')"
            )
        scale_lr = self.config.scale_learning_rate or args.learning_rate
        first = inner.param_groups[0]
        schedule_ratio = first["lr"] / first["initial_lr"] if first.get("initial_lr") else 1.0
        group = {"params": params, "lr": scale_lr * schedule_ratio, "initial_lr": scale_lr, "weight_decay": 0.0}
        group[GROUP_MARKER] = True
        trainer_groups = len(inner.param_groups)
        inner.add_param_group(group)
        self._optimizer = inner
        self._param_group = inner.param_groups[-1]
        self._scheduler = lr_scheduler
        # The scheduler was built for the Trainer's groups; give it one more entry so it schedules ours alike.
        _resize_scheduler(lr_scheduler, trainer_groups, extra_lr=scale_lr, extra_current_lr=group["lr"])
        self._state_dict_hook = inner.register_state_dict_post_hook(_drop_qat_group)
        if restored:
            for index, param in enumerate(params):
                param_state = {}
                for key, value in _with_prefix(restored["tensors"], f"{index}.").items():
                    param_state[key] = value.to(param.device) if key != "step" else value
                for key, value in restored["scalars"].items():
                    position, _, name = key.partition(".")
                    if int(position) == index:
                        param_state[name] = value
                if param_state:
                    inner.state[param] = param_state

    def _install_hooks(self, record: _QuantizedModule) -> None:
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

    # ------------------------------------------------------------------ state changes
    def _activate(self) -> None:
        for record in self.modules.values():
            record.quantizer.reset(weight_out_in(record.module.weight.detach(), record.module))
        if self._optimizer is not None:
            for param in self._learnable_parameters():
                self._optimizer.state.pop(param, None)
        self.active = True

    def _synchronize_observers(self) -> None:
        for record in self.modules.values():
            if record.observer is not None and record.observer.initialized:
                record.observer.synchronize()

    def _freeze_observers(self) -> None:
        self._synchronize_observers()
        for record in self.modules.values():
            if record.observer is not None:
                record.observer.frozen = True
        self.observers_frozen = True

    def _learnable_parameters(self) -> list[nn.Parameter]:
        return [param for record in self.modules.values() for param in record.quantizer.learnable_parameters()]

    @torch.no_grad()
    def _bake(self) -> None:
        if self._model is not None:  # PEFT: fold the LoRA update into the base weight first, so the sum is baked
            peft_lora_hooks.fold_lora_updates_(self._model, {name: r.module for name, r in self.modules.items()})
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
        if self._model is not None and hasattr(self._model, "config"):
            self._model.config.hf_compress_quantization = self.describe()

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

    def _teardown(self) -> None:
        """Remove training hooks and the optimizer group (baked attributes and activation hooks stay)."""
        for record in self.modules.values():
            for handle in record.handles:
                handle.remove()
            record.handles.clear()
            if record.saved_weight is not None:
                record.module._parameters["weight"] = record.saved_weight
                record.saved_weight = None
        if self._optimizer is not None and self._param_group is not None:
            for param in self._param_group["params"]:
                self._optimizer.state.pop(param, None)
            self._optimizer.param_groups[:] = [g for g in self._optimizer.param_groups if g is not self._param_group]
            _resize_scheduler(self._scheduler, len(self._optimizer.param_groups))
        if self._state_dict_hook is not None:
            self._state_dict_hook.remove()
        self._optimizer = self._param_group = self._state_dict_hook = self._scheduler = None


# ---------------------------------------------------------------------- helpers
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
    if activations is not None and type(module).forward not in SUPPORTED_FORWARDS:
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


def _with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}


_SCHEDULER_PER_GROUP_LISTS = (
    "base_lrs",
    "_last_lr",
    "lr_lambdas",
    "min_lrs",
    "max_lrs",
    "base_momentums",
    "max_momentums",
)


def _resize_scheduler(scheduler, trainer_groups: int, extra_lr: float | None = None, extra_current_lr=None) -> None:
    """Cut the scheduler's per-group lists to the Trainer's groups and, with ``extra_lr``, add one entry for ours.

    With ``extra_lr`` the scheduler's ``state_dict`` is also wrapped (on the instance) so that saved checkpoints hold
    the Trainer's groups only and a resumed Trainer can load them before this callback runs; without it the wrapper
    is removed. Wrappers (accelerate's ``AcceleratedScheduler``, ``SequentialLR``, ``ChainedScheduler``) are followed.
    """
    if scheduler is None:
        return
    inner = getattr(scheduler, "scheduler", None)
    if inner is not None and inner is not scheduler:
        _resize_scheduler(inner, trainer_groups, extra_lr, extra_current_lr)
    for child in getattr(scheduler, "_schedulers", None) or ():
        _resize_scheduler(child, trainer_groups, extra_lr, extra_current_lr)
    resized = False
    for attribute in _SCHEDULER_PER_GROUP_LISTS:
        values = getattr(scheduler, attribute, None)
        if not isinstance(values, list) or len(values) < trainer_groups or not values:
            continue
        values = values[:trainer_groups]
        if extra_lr is not None:
            extra = {"base_lrs": extra_lr, "_last_lr": extra_current_lr}.get(attribute, values[0])
            values.append(extra)
        setattr(scheduler, attribute, values)
        resized = True
    if "state_dict" in vars(scheduler):
        del scheduler.state_dict
    if resized and extra_lr is not None:
        scheduler.state_dict = _state_dict_without_extra_group(scheduler.state_dict, trainer_groups)


def _state_dict_without_extra_group(state_dict_method, trainer_groups: int):
    def state_dict():
        state = state_dict_method()
        state.pop("state_dict", None)  # torch schedulers save their __dict__, which now holds this wrapper
        for attribute in _SCHEDULER_PER_GROUP_LISTS:
            if isinstance(state.get(attribute), list):
                state[attribute] = state[attribute][:trainer_groups]
        return state

    return state_dict


def _drop_qat_group(optimizer, state_dict: dict) -> dict:
    """Optimizer state-dict hook: keep learned quantization parameters out of the Trainer's ``optimizer.pt``.

    A resumed Trainer loads ``optimizer.pt`` into a fresh optimizer before this callback re-adds its group, so the
    file must hold only the Trainer's own groups; the callback saves its group's state in its own checkpoint file.
    """
    groups = state_dict["param_groups"]
    ours = [group for group in groups if group.get(GROUP_MARKER)]
    if not ours:
        return state_dict
    dropped = {index for group in ours for index in group["params"]}
    return {
        **state_dict,
        "state": {index: value for index, value in state_dict["state"].items() if index not in dropped},
        "param_groups": [group for group in groups if not group.get(GROUP_MARKER)],
    }


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
