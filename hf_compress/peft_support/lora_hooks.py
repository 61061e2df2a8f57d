"""How hf_compress's callbacks act on LoRA layers while a PeftModel trains.

Each ``peft`` ``lora.Linear`` whose base layer is pruned or quantized gets a :class:`LoraCompressionState` (attribute
``hf_compress_lora``), a forward pre-hook and a forward hook (torch's public module hooks), and two guarded methods:

- forward hooks: the pre-hook marks the active adapters merged for this call, so peft's own ``forward`` runs the base
  layer alone, and puts the effective weight ``(W + scaling * B @ A) * M`` is put in place of the base layer's weight for
  the duration of its forward (one matmul, and the update never touches a pruned weight). Under QAT, QAT's own hooks
  on the base layer then fake-quantize that sum (QA-LoRA style; LoRA dropout is not applied then). With LoRA dropout
  in training (and no QAT) the layer computes ``base(x) + dropout(x) @ ((scaling * B @ A) * M)^T`` instead (the base
  weight is already ``W * M``; the forward hook adds the masked update). The forward hook restores the merged state
  and the base weight. Disabled or merged adapters behave exactly as in peft.
- peft's own merge keeps the compression: every adapter of the layer gets hf_compress's LoRA variant
  (:mod:`.merge_variant`, in peft's ``lora_variant`` slot), so ``merge()`` / ``merge_and_unload()`` write
  ``(W + B @ A) * M`` and ``unmerge()`` takes it back; ``unmerge`` refuses after QAT folded the update into the
  quantized base weight.

```python
from hf_compress import PruningCallback, PruningConfig, merge_and_unload

trainer = Trainer(model=peft_model, args=args, train_dataset=train_dataset,
                  callbacks=[PruningCallback(PruningConfig(target_sparsity=0.5))])
trainer.train()              # the LoRA update is masked in every forward
merged = merge_and_unload(peft_model)  # (W + BA) * M, a plain transformers model
```
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from hf_compress.peft_support.lora_math import effective_weight, masked
from hf_compress.peft_support.modules import adapter_layers, check_peft_type, is_peft_model
from hf_compress.targets import is_conv1d, weight_out_in

logger = logging.getLogger(__name__)

STATE_ATTRIBUTE = "hf_compress_lora"
PRUNING_PEFT_TYPES = ("LORA", "IA3")  # (IA)3 scales activations: its merge W * l keeps every zero by itself
QAT_PEFT_TYPES = ("LORA",)


@dataclass
class LoraCompressionState:
    """What hf_compress applies to one LoRA layer.

    Args:
        name (`str`): the base layer's module name (the key of the pruning masks).
        mask_of (`Callable[[str], torch.Tensor | None]`, *optional*): returns the current ``[out, in]`` keep mask.
        fold (`bool`): route the effective weight through the base layer (QAT).
        folded (`bool`): the update was folded into the (quantized) base weight at QAT's train end.
    """

    name: str
    mask_of: Callable[[str], torch.Tensor | None] | None = None
    fold: bool = False
    folded: bool = False
    handles: list = field(default_factory=list)
    # set by the pre-hook for the forward in progress, cleared by the forward hook
    saved_merged: list | None = None
    saved_weight: torch.Tensor | None = None
    pending_update: tuple | None = None

    def mask(self) -> torch.Tensor | None:
        return None if self.mask_of is None else self.mask_of(self.name)


def compression_state(layer: nn.Module) -> LoraCompressionState | None:
    return getattr(layer, STATE_ATTRIBUTE, None)


def active_lora_adapters(layer: nn.Module) -> list[str]:
    return [name for name in layer.active_adapters if name in layer.lora_A.keys()]


def _check_lora_layer(name: str, layer: nn.Module, technique: str) -> None:
    from peft.tuners.lora.layer import Linear as LoraLinear

    from hf_compress.peft_support.merge_variant import MaskedMergeVariant

    if not isinstance(layer, LoraLinear):
        raise ValueError(
            f"{technique}: the LoRA layer over {name} is a {type(layer).__module__}.{type(layer).__qualname__}; "
            "hf_compress handles peft's lora.Linear over torch.nn.Linear / transformers Conv1D only (exclude it)"
        )
    for adapter in layer.lora_A.keys():
        variant = layer.lora_variant.get(adapter)
        if variant is not None and not isinstance(variant, MaskedMergeVariant):  # hf_compress's own is fine
            raise ValueError(
                f"{technique} does not support the LoRA variant {type(variant).__name__} (adapter {adapter!r}, e.g. "
                "use_dora=True) on PEFT type LORA; supported: plain LoRA"
            )
        if layer.lora_bias.get(adapter):
            raise ValueError(
                f"{technique} does not support lora_bias=True (adapter {adapter!r}); supported: plain LoRA"
            )


def _install(layer: nn.Module, name: str) -> LoraCompressionState:
    state = compression_state(layer)
    if state is None:
        state = LoraCompressionState(name)
        setattr(layer, STATE_ATTRIBUTE, state)
        state.handles = [
            layer.register_forward_pre_hook(_before_lora_forward, with_kwargs=True),
            layer.register_forward_hook(_after_lora_forward, with_kwargs=True, always_call=True),
        ]
    from hf_compress.peft_support.merge_variant import MASKED_MERGE

    for adapter in layer.lora_A.keys():
        layer.lora_variant[adapter] = MASKED_MERGE
    return state


def remove_compression_state(layer: nn.Module) -> None:
    """Remove hf_compress's hooks and LoRA variants from ``layer`` and drop its state."""
    from hf_compress.peft_support.merge_variant import MaskedMergeVariant

    state = compression_state(layer)
    if state is not None:
        for handle in state.handles:
            handle.remove()
    for adapter, variant in list(getattr(layer, "lora_variant", {}).items()):
        if isinstance(variant, MaskedMergeVariant):
            del layer.lora_variant[adapter]
    layer.__dict__.pop(STATE_ATTRIBUTE, None)


def attach_pruning(
    model: nn.Module,
    modules: dict[str, nn.Module],
    mask_of: Callable[[str], torch.Tensor | None],
    *,
    needs_weight_gradients: bool = False,
) -> None:
    """Called by :class:`~hf_compress.PruningCallback` at train begin (no-op unless ``model`` is a PeftModel): every
    LoRA layer over a pruned base layer masks its update with ``mask_of(base_name)``.

    Raises:
        ValueError: an unsupported PEFT type or LoRA variant (named), or a gradient-based criterion on frozen base
            weights.
    """
    if not is_peft_model(model):
        return
    check_peft_type(model, "PruningCallback", PRUNING_PEFT_TYPES)
    frozen = [name for name, module in modules.items() if not module.weight.requires_grad]
    if needs_weight_gradients and frozen:
        raise ValueError(
            f"criterion: the chosen criterion reads weight gradients, but PEFT froze the base weights (e.g. {frozen[0]}); "
            "allowed with a PeftModel: a criterion that does not need gradients, e.g. 'magnitude' or 'random'"
        )
    layers = _lora_layers(model, modules, "PruningCallback")
    for name, layer in layers.items():
        _install(layer, name).mask_of = mask_of


def attach_qat(model: nn.Module, modules: dict[str, nn.Module]) -> None:
    """Called by :class:`~hf_compress.QATCallback` at train begin (no-op unless ``model`` is a PeftModel): every LoRA
    layer over a quantized base layer computes with the effective weight ``W + scaling * B @ A`` through its base
    layer, whose QAT hooks fake-quantize it.

    Raises:
        ValueError: an unsupported PEFT type or LoRA variant (named).
    """
    if not is_peft_model(model):
        return
    check_peft_type(model, "QATCallback", QAT_PEFT_TYPES)
    layers = _lora_layers(model, modules, "QATCallback")
    dropped = []
    for name, layer in layers.items():
        state = _install(layer, name)
        state.fold, state.folded = True, False
        if any(not isinstance(layer.lora_dropout[a], nn.Identity) for a in layer.lora_dropout.keys()):
            dropped.append(name)
    if dropped:
        logger.warning(
            "hf_compress QAT: LoRA dropout is not applied under QAT (the effective weight W + BA is quantized as a "
            "whole), e.g. on %s",
            dropped[0],
        )


@torch.no_grad()
def fold_lora_updates_(model: nn.Module, modules: dict[str, nn.Module]) -> None:
    """Write ``(W + scaling * B @ A) * M`` into the base weight of every QAT-folded LoRA layer over ``modules`` and
    mark its adapters merged (peft's merged state), so QAT bakes the weight that was trained. Called by
    :class:`~hf_compress.QATCallback` before it bakes."""
    if not is_peft_model(model):
        return
    for layer in adapter_layers(model, list(modules)).values():
        state = compression_state(layer)
        if state is None or not state.fold or layer.merged:
            continue
        layer.merge()  # peft's merge, through hf_compress's LoRA variant: (W + B @ A) * M
        state.folded = True


def lora_update(layer: nn.Module, adapter: str) -> torch.Tensor:
    """``scaling * B @ A`` of ``adapter`` as ``[out, in]``, from peft's own ``get_delta_weight`` (differentiable)."""
    return weight_out_in(layer.get_delta_weight(adapter), layer.get_base_layer())


def _lora_layers(model: nn.Module, modules: dict[str, nn.Module], technique: str) -> dict[str, nn.Module]:
    from peft.tuners.lora.layer import LoraLayer

    layers = {
        name: layer for name, layer in adapter_layers(model, list(modules)).items() if isinstance(layer, LoraLayer)
    }
    for name, layer in layers.items():
        _check_lora_layer(name, layer, technique)
    return layers


# ---------------------------------------------------------------------- forward hooks of compressed LoRA layers
def _before_lora_forward(layer: nn.Module, args: tuple, kwargs: dict):
    state = compression_state(layer)
    adapters = active_lora_adapters(layer)
    if state is None or layer.disable_adapters or layer.merged or not adapters:
        return None
    if kwargs.get("adapter_names") is not None:
        raise ValueError(
            f"{state.name}: mixed-adapter batches (adapter_names=...) are not supported while hf_compress prunes or "
            "quantizes this LoRA layer"
        )
    mask = state.mask()
    base = layer.get_base_layer()
    state.saved_merged = list(layer.merged_adapters)
    layer.merged_adapters.extend(adapters)  # peft's forward now calls the base layer alone
    # One matmul with the effective weight when no dropout acts on the LoRA input (QAT always takes this path).
    no_dropout = not layer.training or all(isinstance(layer.lora_dropout[a], nn.Identity) for a in adapters)
    if state.fold or no_dropout:
        weight = base._parameters["weight"]
        combined = effective_weight(weight_out_in(weight, base), [lora_update(layer, a) for a in adapters], mask)
        state.saved_weight = weight
        # A plain tensor in place of the Parameter for this forward only (QAT's hooks quantize what they find here).
        base._parameters["weight"] = combined.t() if is_conv1d(base) else combined
    else:
        state.pending_update = (args[0] if args else kwargs["x"], adapters, mask)
    return None


def _after_lora_forward(layer: nn.Module, args: tuple, kwargs: dict, output):
    state = compression_state(layer)
    if state is None or state.saved_merged is None:
        return None
    layer.merged_adapters[:] = state.saved_merged
    state.saved_merged = None
    if state.saved_weight is not None:
        layer.get_base_layer()._parameters["weight"] = state.saved_weight
        state.saved_weight = None
    pending, state.pending_update = state.pending_update, None
    if pending is None or output is None:
        return None
    x, adapters, mask = pending
    result = output
    for adapter in adapters:
        lora_input = layer._cast_input_dtype(x, layer.lora_A[adapter].weight.dtype)
        update = masked(lora_update(layer, adapter), mask)
        result = result + F.linear(layer.lora_dropout[adapter](lora_input), update)
    return result.to(output.dtype)
