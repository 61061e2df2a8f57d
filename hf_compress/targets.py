"""Which modules a technique touches, and a uniform ``[out_features, in_features]`` view of their weights.

Default targets are every ``nn.Linear`` and transformers ``Conv1D`` inside the model body (``model.base_model``),
never embeddings, the LM head or classifier heads, norms or biases. ``targets`` / ``exclude`` take regexes
matched with ``re.search`` against module names as ``model.named_modules()`` prints them.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

import torch
from torch import nn

from hf_compress.distributed import unwrap_model, weight_shape


def conv1d_class() -> type[nn.Module] | None:
    """transformers' ``Conv1D`` (GPT-2's transposed linear), or None while transformers is not imported.

    A module can only be a ``Conv1D`` once ``transformers.pytorch_utils`` is imported, so looking it up in
    ``sys.modules`` keeps ``import hf_compress`` and building a config free of the transformers import.
    """
    module = sys.modules.get("transformers.pytorch_utils")
    return getattr(module, "Conv1D", None)


def is_conv1d(module: nn.Module) -> bool:
    conv1d = conv1d_class()
    return conv1d is not None and isinstance(module, conv1d)


def is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or is_conv1d(module)


def in_out_features(module: nn.Module) -> tuple[int, int]:
    """``(in_features, out_features)`` of a Linear or a Conv1D."""
    if is_conv1d(module):
        shape = weight_shape(module.weight)  # also outside a ZeRO-3 gather
        return shape[0], shape[1]
    return module.in_features, module.out_features


def weight_out_in(weight: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """A ``[out, in]`` view of ``weight`` (or a tensor shaped like it): Conv1D stores ``[in, out]``."""
    return weight.t() if is_conv1d(module) else weight


def _body_prefix(model: nn.Module) -> str:
    """Name prefix of the model body (``base_model``), or "" when the model is its own body."""
    from hf_compress.peft_support.modules import peft_body  # a PeftModel's body is its transformers model's

    base = peft_body(model)
    base = getattr(model, "base_model", None) if base is None else base
    if isinstance(base, nn.Module) and base is not model:
        for name, module in model.named_modules():
            if module is base:
                return name
    return ""


def _output_module_ids(model: nn.Module) -> set[int]:
    ids = set()
    getter = getattr(model, "get_output_embeddings", None)
    if callable(getter):
        try:
            out = getter()
        except (AttributeError, NotImplementedError):
            out = None
        if isinstance(out, nn.Module):
            ids.add(id(out))
    return ids


def find_target_modules(
    model: nn.Module,
    targets: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    *,
    field: str = "targets",
) -> dict[str, nn.Module]:
    """Modules to compress, by name, in ``named_modules`` order.

    Args:
        model (`nn.Module`): the model (wrappers such as DDP are looked through).
        targets (`list[str]`, *optional*): regexes; a module is a target when its name matches one. Named modules
            may be any Linear/Conv1D, the LM head included. Defaults to every Linear/Conv1D in the model body.
        exclude (`list[str]`, *optional*): regexes of module names to leave alone.
        field (`str`): the config field name used in error messages.

    Raises:
        ValueError: a regex in ``targets`` or ``exclude`` matches no Linear/Conv1D module; the message names the
            pattern and a few real module names.
    """
    model = unwrap_model(model)
    from hf_compress.peft_support.modules import adapter_module_names  # PEFT: base layers only, never lora_A/B

    adapter_names = adapter_module_names(model)
    linears = [(n, m) for n, m in model.named_modules() if is_linear(m) and n not in adapter_names]
    examples = ", ".join(name for name, _ in linears[:6]) or "(the model has no Linear/Conv1D modules)"
    if targets:
        chosen = []
        for pattern in targets:
            regex = _compile(pattern, field)
            if not any(regex.search(name) for name, _ in linears):
                raise ValueError(
                    f"{field}: pattern {pattern!r} matches no Linear/Conv1D module; module names look like: {examples}"
                )
        chosen = [(n, m) for n, m in linears if any(_compile(p, field).search(n) for p in targets)]
    else:
        prefix = _body_prefix(model)
        skip = _output_module_ids(model)
        chosen = [
            (n, m)
            for n, m in linears
            if id(m) not in skip and (not prefix or n == prefix or n.startswith(prefix + "."))
        ]
    exclude_field = "exclude" if field == "targets" else f"{field}.exclude"
    for pattern in exclude or ():
        regex = _compile(pattern, exclude_field)
        if not any(regex.search(name) for name, _ in linears):
            raise ValueError(
                f"{exclude_field}: pattern {pattern!r} matches no Linear/Conv1D module; module names look like: {examples}"
            )
        chosen = [(n, m) for n, m in chosen if not regex.search(n)]
    return dict(chosen)


def _compile(pattern: str, field: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ValueError(f"{field}: {pattern!r} is not a valid regex: {error}") from None
