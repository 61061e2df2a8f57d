"""peft's own merge of a compressed LoRA layer keeps the compression, through peft's LoRA-variant slot.

peft lets a LoRA layer carry a *variant* per adapter (``layer.lora_variant[adapter]``, the slot DoRA uses) whose
``merge_safe`` / ``merge_unsafe`` / ``unmerge`` / ``forward`` replace vanilla LoRA's. hf_compress puts
:data:`MASKED_MERGE` there for every adapter of a pruned or quantized LoRA layer, so that ``layer.merge()``,
``PeftModel.merge_adapter()`` and ``PeftModel.merge_and_unload()`` write ``(W + scaling * B @ A) * M`` instead of
adding the unmasked update (which would fill the pruned weights), and ``unmerge()`` takes back exactly that. Nothing
of peft's is patched: the variant is data in a dict peft reads.

peft marks its variant classes as subject to change; ``tests/peft`` fails the day peft stops calling them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from peft.tuners.lora.layer import LoraVariant
from torch import nn

from hf_compress.peft_support.lora_hooks import compression_state as _state
from hf_compress.peft_support.lora_hooks import lora_update as _delta
from hf_compress.peft_support.lora_math import effective_weight, masked
from hf_compress.targets import weight_out_in


def _mask(module: nn.Module) -> torch.Tensor | None:
    state = _state(module)
    return None if state is None else state.mask()


class MaskedMergeVariant(LoraVariant):
    """Vanilla LoRA whose update is masked by the base layer's pruning mask, in merges and in forward."""

    def supports_lora_conversion(self) -> bool:
        return False

    @staticmethod
    def init(module: nn.Module, adapter_name: str, **kwargs) -> None:
        return None

    @staticmethod
    @torch.no_grad()
    def merge_unsafe(module: nn.Module, active_adapter: str, orig_weight: torch.Tensor) -> None:
        view = weight_out_in(orig_weight.data, module.get_base_layer())
        view.copy_(effective_weight(view, [_delta(module, active_adapter)], _mask(module)))

    @staticmethod
    def merge_safe(module: nn.Module, active_adapter: str, orig_weight: torch.Tensor) -> torch.Tensor:
        merged = orig_weight.clone()
        MaskedMergeVariant.merge_unsafe(module, active_adapter, merged)
        return merged

    @staticmethod
    @torch.no_grad()
    def unmerge(module: nn.Module, active_adapter: str, orig_weight: torch.Tensor) -> torch.Tensor:
        state = _state(module)
        if state is not None and state.folded:
            module.merged_adapters.append(active_adapter)  # peft popped it before calling: the layer stays merged
            raise ValueError(
                f"{state.name}: QAT folded this LoRA update into the quantized base weight at train end, so it cannot "
                "be unmerged (nor the adapter disabled); the merged weight is the one that was trained. Use "
                "hf_compress.merge_and_unload(model) to get the plain quantized model"
            )
        unmerged = orig_weight.data.clone()
        view = weight_out_in(unmerged, module.get_base_layer())
        view.sub_(masked(_delta(module, active_adapter), _mask(module)).to(view.dtype))
        return unmerged

    @staticmethod
    def forward(module: nn.Module, active_adapter: str, x: torch.Tensor, result: torch.Tensor, **kwargs):
        # hf_compress's forward hooks normally compute this layer; this is peft's path when they stand aside
        update = masked(_delta(module, active_adapter), _mask(module))
        return result + F.linear(module.lora_dropout[active_adapter](x), update.to(x.dtype))


MASKED_MERGE = MaskedMergeVariant()
