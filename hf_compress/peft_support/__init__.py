"""PEFT (LoRA) support: compress a ``peft.PeftModel`` while it fine-tunes, then merge without losing the compression.

What works with which PEFT type (in an unmodified ``transformers.Trainer``):

- :class:`~hf_compress.PruningCallback`: LoRA and (IA)3. Masks apply to the frozen base layers; LoRA updates are
  masked in every forward, so the merged weight is ``(W + B @ A) * M`` (see :mod:`.lora_hooks`). (IA)3 merges as
  ``W * l``, which keeps every zero by itself. Criteria that read weight gradients (movement) are refused: PEFT
  freezes the base weights.
- :class:`~hf_compress.QATCallback`: LoRA. The effective weight ``W + B @ A`` (masked when also pruning) is
  fake-quantized; at train end it is folded into the base weight and baked onto the grid (QA-LoRA style).
- :class:`~hf_compress.DistillationCallback`: any PEFT type as the student; :func:`adapters_disabled_teacher` gives a
  teacher that is the same base model with its adapters disabled (single copy of the weights).
- Other PEFT types (LoHa, LoKr, ...) and LoRA variants (DoRA, lora_bias) get a ValueError naming them.

Checkpoints: the Trainer saves the adapter; the callbacks save their state next to it and restore it on resume
(pruning re-applies its masks to the freshly loaded base weights).

```python
from hf_compress import PruningCallback, PruningConfig, merge_and_unload

trainer = Trainer(model=peft_model, args=args, train_dataset=train_dataset,
                  callbacks=[PruningCallback(PruningConfig(target_sparsity=0.5))])
trainer.train()
merged = merge_and_unload(peft_model)  # a plain transformers model, 50% sparse
merged.save_pretrained("out/merged")
```
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from hf_compress.distributed import unwrap_model
from hf_compress.peft_support.lora_hooks import (
    compression_state,
    remove_compression_state,
)
from hf_compress.peft_support.modules import check_peft_type, is_peft_model, plain_name
from hf_compress.peft_support.teacher import AdapterDisabledTeacher, adapters_disabled_teacher
from hf_compress.targets import weight_out_in

__all__ = ["AdapterDisabledTeacher", "adapters_disabled_teacher", "is_peft_model", "merge_and_unload"]

MERGE_PEFT_TYPES = ("LORA", "IA3")


@torch.no_grad()
def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge the active adapters of a PeftModel into its base weights, keeping hf_compress's compression exact.

    Every adapter layer is merged by peft; LoRA layers over pruned base layers get ``(W + scaling * B @ A) * M``
    through hf_compress's LoRA variant, and layers QAT already folded onto the grid stay as they are. The adapters are then unloaded, so the result is the
    plain transformers model (``save_pretrained`` writes a normal checkpoint). QAT's per-module parameters and
    ``config.hf_compress_quantization`` follow the modules to their plain names, ready for :func:`hf_compress.export`.

    Args:
        model (`peft.PeftModel`): the trained model (DDP wrappers are looked through). It is consumed: use the
            returned model afterwards.

    Returns:
        `PreTrainedModel`: the merged model.

    Raises:
        ValueError: ``model`` is not a PeftModel, or uses a PEFT type other than LoRA / (IA)3 (named).
        RuntimeError: a pruned weight is non-zero after merging (never expected; the check guards the guarantee).

    ```python
    >>> import torch
    >>> from peft import LoraConfig, get_peft_model
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> from hf_compress import merge_and_unload
    >>> base = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=2, n_positions=16))
    >>> peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True))
    >>> type(merge_and_unload(peft_model)).__name__
    'GPT2LMHeadModel'

    ```
    """
    model = unwrap_model(model)
    if not is_peft_model(model):
        raise ValueError(
            f"merge_and_unload expects a peft.PeftModel; got {type(model).__name__} (a plain model has nothing to merge)"
        )
    check_peft_type(model, "hf_compress.merge_and_unload", MERGE_PEFT_TYPES)
    from peft.tuners.tuners_utils import BaseTunerLayer

    kept_masks = []
    for layer in [module for module in model.modules() if isinstance(module, BaseTunerLayer)]:
        state = compression_state(layer)
        mask = state.mask() if state is not None else None
        base = layer.get_base_layer()
        if not layer.merged:
            layer.merge()  # a compressed layer merges (W + B @ A) * M (hf_compress's LoRA variant)
        if mask is not None:
            kept_masks.append((state.name, base, mask))
        if state is not None:
            remove_compression_state(layer)

    old_names = {id(module): name for name, module in model.named_modules()}
    # every layer is merged already, so peft merges nothing more here; its merge_and_unload, not unload, keeps the
    # trained copies of modules_to_save (a classification head): peft 0.22's unload() restores the originals
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="All adapters are already merged")  # expected: merged above
        merged = model.merge_and_unload()
    _rename_quantized_modules(merged, old_names)
    for name, base, mask in kept_masks:
        weight = weight_out_in(base.weight.detach(), base)
        if bool((weight[~mask.to(weight.device)] != 0).any()):
            raise RuntimeError(f"hf_compress.merge_and_unload: pruned weights of {name} became non-zero when merging")
    return merged


def _rename_quantized_modules(merged: nn.Module, old_names: dict[int, str]) -> None:
    """``config.hf_compress_quantization["modules"]`` lists PeftModel names; give them their plain names."""
    config = getattr(merged, "config", None)
    described = getattr(config, "hf_compress_quantization", None)
    if not isinstance(described, dict) or not described.get("modules"):
        return
    new_names = {old_names.get(id(module)): name for name, module in merged.named_modules()}
    described["modules"] = [new_names.get(name) or plain_name(name) for name in described["modules"]]
