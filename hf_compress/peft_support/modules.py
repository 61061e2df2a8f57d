"""Finding one's way inside a ``peft.PeftModel``: which PEFT type it uses, where the transformers body is, which
modules belong to the adapters, and which adapter layer wraps a given base layer.

PEFT wraps each adapted layer, e.g. ``...attn.c_attn`` becomes a ``lora.Linear`` whose frozen original is
``...attn.c_attn.base_layer`` and whose adapters are ``...attn.c_attn.lora_A.default`` / ``lora_B.default``.
hf_compress always compresses the base layers, never the adapter matrices. Nothing here imports peft unless the model
looks like a PEFT model.

```python
>>> from torch import nn
>>> from hf_compress.peft_support.modules import is_peft_model
>>> is_peft_model(nn.Linear(2, 2))
False

```
"""

from __future__ import annotations

from torch import nn

BASE_LAYER = "base_layer"


def is_peft_model(model: nn.Module) -> bool:
    """Whether ``model`` is a ``peft.PeftModel`` (DDP wrappers are not looked through; unwrap first)."""
    if not hasattr(model, "peft_config"):
        return False
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft not installed
        return False
    return isinstance(model, PeftModel)


def peft_types(model: nn.Module) -> dict[str, str]:
    """Adapter name -> PEFT type name (``"LORA"``, ``"IA3"``, ``"LOHA"``, ...)."""
    return {
        name: str(getattr(config.peft_type, "value", config.peft_type)) for name, config in model.peft_config.items()
    }


def check_peft_type(model: nn.Module, technique: str, supported: tuple[str, ...]) -> None:
    """Raise a ValueError naming the PEFT type when ``technique`` does not support an adapter of ``model``."""
    for adapter, peft_type in peft_types(model).items():
        if peft_type not in supported:
            raise ValueError(
                f"{technique} does not support PEFT type {peft_type} (adapter {adapter!r}); supported PEFT types: "
                f"{', '.join(supported)}. Merge the adapter first (model.merge_and_unload()) to compress the plain "
                "model, or train a LoRA adapter instead"
            )


def peft_body(model: nn.Module) -> nn.Module | None:
    """The transformers body (e.g. ``BertModel``, ``GPT2Model``) inside a PeftModel; None for other models."""
    if not is_peft_model(model):
        return None
    inner = model.get_base_model()
    body = getattr(inner, "base_model", None)
    return body if isinstance(body, nn.Module) else inner


def adapter_module_names(model: nn.Module) -> set[str]:
    """Names of the modules that belong to adapters (``lora_A``, ``lora_B``, ``modules_to_save`` copies, ...): every
    module inside a PEFT tuner layer except its ``base_layer`` subtree, and everything inside a PEFT wrapper such as
    ``ModulesToSaveWrapper``. Empty for a model that is not a PeftModel."""
    if not is_peft_model(model):
        return set()
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    tuner_prefixes, wrapper_prefixes = [], []
    for name, module in model.named_modules():
        if isinstance(module, BaseTunerLayer):
            tuner_prefixes.append(name + ".")
        elif isinstance(module, AuxiliaryTrainingWrapper):
            wrapper_prefixes.append(name + ".")
    names = set()
    for name, _ in model.named_modules():
        if any(name.startswith(prefix) for prefix in wrapper_prefixes):
            names.add(name)
            continue
        for prefix in tuner_prefixes:
            if name.startswith(prefix) and not name[len(prefix) :].startswith(BASE_LAYER):
                names.add(name)
                break
    return names


def adapter_layers(model: nn.Module, base_names: list[str]) -> dict[str, nn.Module]:
    """Base layer name -> the PEFT tuner layer that wraps it, for the names that are ``<layer>.base_layer``."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = {}
    for name in base_names:
        parent_name, _, leaf = name.rpartition(".")
        if leaf != BASE_LAYER or not parent_name:
            continue
        parent = model.get_submodule(parent_name)
        if isinstance(parent, BaseTunerLayer):
            layers[name] = parent
    return layers


def plain_name(peft_name: str) -> str:
    """The module name a PeftModel's module gets once the adapters are unloaded:
    ``base_model.model.transformer.h.0.attn.c_attn.base_layer`` -> ``transformer.h.0.attn.c_attn``."""
    name = peft_name.removeprefix("base_model.model.")
    return ".".join(part for part in name.split(".") if part != BASE_LAYER)
