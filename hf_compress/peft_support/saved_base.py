"""A PEFT run's saved output carries its compression.

``PeftModel.save_pretrained`` writes the adapter only, and loading it rebuilds the base from
``base_model_name_or_path``: the dense original. The pruning (and QAT) of the frozen base would exist only in memory.
So at train end :class:`~hf_compress.PruningCallback` and :class:`~hf_compress.QATCallback` write, beside the
adapter in ``args.output_dir`` (where ``trainer.save_model()`` puts it by default), what rebuilds the compressed
base: ``hf_compress_peft_<technique>.safetensors`` (the changed base weights and the pruning masks) and ``.json``
(which module is which, which LoRA updates QAT folded into the base, QAT's description).

```python
from peft import AutoPeftModelForCausalLM
import hf_compress

model = AutoPeftModelForCausalLM.from_pretrained("out")  # the dense base plus the adapter
hf_compress.restore_compression(model, "out")  # the pruned / QAT base weights, masks, folded updates
merged = hf_compress.merge_and_unload(model)  # (W + BA) * M: as sparse as the model that was trained
```

Saving elsewhere: ``hf_compress.save_compression(trainer.model, folder)`` writes the same files for every
hf_compress callback that ran on the model.
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

from hf_compress.checkpoint_state import load_state, save_state
from hf_compress.distributed import unwrap_model
from hf_compress.peft_support.modules import adapter_layers, is_peft_model

logger = logging.getLogger(__name__)

TECHNIQUES = ("pruning", "qat")  # restored in this order: QAT's weights are the final ones where both apply
_PENDING_ATTRIBUTE = "_hf_compress_saved_base"


def file_stem(technique: str) -> str:
    return f"hf_compress_peft_{technique}"


def record_compressed_base(
    model: nn.Module,
    technique: str,
    modules: dict[str, nn.Module],
    masks: dict[str, torch.Tensor] | None = None,
    description: dict | None = None,
) -> bool:
    """Remember what ``technique`` changed in a PeftModel's base (at train end); False for a plain model.

    Only references are kept (no copy); :func:`save_compression` reads the weights when it writes.
    """
    model = unwrap_model(model)
    if not is_peft_model(model):
        return False
    from hf_compress.peft_support.lora_hooks import compression_state

    layers = adapter_layers(model, list(modules))
    folded = [name for name, layer in layers.items() if getattr(compression_state(layer), "folded", False)]
    pending = model.__dict__.setdefault(_PENDING_ATTRIBUTE, {})
    pending[technique] = (dict(modules), dict(masks or {}), folded, description)
    return True


def save_compression(model: nn.Module, folder: str | os.PathLike) -> list[str]:
    """Write the compressed-base files of every technique recorded on ``model`` into ``folder``; their paths.

    Raises:
        ValueError: ``model`` is a PeftModel no hf_compress callback finished training on.
    """
    model = unwrap_model(model)
    pending = model.__dict__.get(_PENDING_ATTRIBUTE)
    if not pending:
        raise ValueError("save_compression: no hf_compress pruning or QAT finished on this model; nothing to save")
    written = []
    for technique, (modules, masks, folded, description) in pending.items():
        tensors = {}
        for name, module in modules.items():
            tensors[f"weight::{name}"] = module.weight.detach()
        for name, mask in masks.items():
            tensors[f"mask::{name}"] = mask.to(torch.uint8)
        meta = {"modules": list(modules), "masks": list(masks), "folded": folded, "description": description}
        save_state(os.fspath(folder), file_stem(technique), tensors, meta)
        written.append(os.path.join(os.fspath(folder), f"{file_stem(technique)}.safetensors"))
    return written


@torch.no_grad()
def restore_compression(model: nn.Module, folder: str | os.PathLike) -> list[str]:
    """Rebuild the compressed base of a PeftModel loaded from ``folder`` (the dense base plus the adapter).

    Copies the saved base weights in, re-installs the pruning masks on the LoRA layers (so their updates stay masked
    and a merge, peft's or :func:`hf_compress.merge_and_unload`, writes ``(W + BA) * M``) and marks the updates QAT
    folded into the base as merged. Returns the techniques restored.

    Raises:
        ValueError: ``model`` is not a PeftModel, ``folder`` holds no hf_compress files, or a saved module is
            missing from the model (naming it).
    """
    from hf_compress.peft_support.lora_hooks import _install, active_lora_adapters

    model = unwrap_model(model)
    if not is_peft_model(model):
        raise ValueError(f"restore_compression expects a peft.PeftModel; got {type(model).__name__}")
    folder = os.fspath(folder)
    modules = dict(model.named_modules())
    restored = []
    for technique in TECHNIQUES:
        saved = load_state(folder, file_stem(technique))
        if saved is None:
            continue
        tensors, meta = saved
        for name in meta["modules"]:
            if name not in modules or not isinstance(getattr(modules[name], "weight", None), torch.Tensor):
                raise ValueError(
                    f"{folder}/{file_stem(technique)}.json: module {name!r} is not in this model; load the adapter "
                    "onto the base model it was trained on"
                )
            weight = modules[name].weight
            weight.copy_(tensors[f"weight::{name}"].to(device=weight.device, dtype=weight.dtype))
        layers = adapter_layers(model, list(meta["modules"]))
        masks = {name: tensors[f"mask::{name}"].bool() for name in meta.get("masks", [])}
        for name in masks:
            if name in layers:
                device = layers[name].get_base_layer().weight.device
                _install(layers[name], name).mask_of = lambda key, masks=masks, device=device: masks[key].to(device)
        for name in meta.get("folded", []):
            state = _install(layers[name], name)
            state.fold, state.folded = True, True
            layer = layers[name]
            layer.merged_adapters.extend(a for a in active_lora_adapters(layer) if a not in layer.merged_adapters)
        if meta.get("description") is not None:
            model.get_base_model().config.hf_compress_quantization = meta["description"]
        restored.append(technique)
    if not restored:
        raise ValueError(
            f"{folder}: holds no hf_compress_peft_*.json; it was not written by a PEFT run with hf_compress pruning "
            "or QAT (or the files were not copied with the adapter)"
        )
    return restored


def save_at_train_end(args, model: nn.Module) -> None:
    """Called by the callbacks' ``on_train_end`` after recording: write the files into ``args.output_dir``."""
    paths = save_compression(model, args.output_dir)
    logger.warning(
        "hf_compress: a PeftModel's saved adapter does not hold the compressed base; wrote %s into %s. After "
        "loading the adapter, call hf_compress.restore_compression(model, folder) (then hf_compress.merge_and_unload)",
        ", ".join(os.path.basename(path) for path in paths),
        args.output_dir,
    )
