"""Rotate the residual stream onto its principal axes, so that cutting hidden channels cuts the least signal.

SliceGPT's computational invariance (Ashkboos et al., 2024), with one rotation for the whole model so that the
result is still a stock config: an RMSNorm whose weight is all ones commutes with any orthogonal ``Q``
(``rms(x Q) = rms(x)``), so after each norm's weight is folded into the linear layers that read it, rotating every
residual writer on its output side (embeddings, attention ``o_proj``, MLP ``down_proj``) and every reader on its
input side (q/k/v, gate/up, the LM head) leaves the outputs unchanged. ``Q`` holds the eigenvectors of the
covariance of the normalised residual stream over calibration batches, largest first, so channel ``i`` of the
rotated model carries the ``i``-th largest share of what the norms see. Hidden-channel selection (the ``activation``
criterion) then removes the last channels: a principal-component cut instead of a cut of the original coordinates.

RMSNorm families only (Llama, Qwen2, Mistral), with untied input and output embeddings and a head (LM or
classification) inside the model: LayerNorm subtracts the mean over coordinates, which a rotation does not preserve;
a tied LM head would need the final norm's weight folded into the shared embedding matrix; and a bare ``LlamaModel``
returns the residual stream itself, which the rotation would change.

```python
>>> import torch
>>> from transformers import LlamaConfig, LlamaForCausalLM
>>> from hf_compress.structured.rotation import rotate_hidden_
>>> model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
...                                      num_attention_heads=4, num_key_value_heads=2, head_dim=8,
...                                      tie_word_embeddings=False)).eval()
>>> ids = torch.randint(0, 64, (2, 16))
>>> before = model(ids).logits
>>> shares = rotate_hidden_(model, [{"input_ids": ids}])
>>> bool(torch.allclose(model(ids).logits, before, atol=1e-4)), bool((shares[:-1] >= shares[1:]).all())
(True, True)

```
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from hf_compress.distributed import all_reduce_sum_, broadcast_, unwrap_model
from hf_compress.structured.criteria import forward_with_hooks
from hf_compress.structured.families import Family, family_of


def rotation_refusal(family: Family) -> str | None:
    """Why the residual stream of ``family``'s model cannot be rotated, or None when it can."""
    model = family.model
    if not (family.rms_norm and family.pre_norm):
        return (
            f"hidden_rotation: {type(model).__name__} uses LayerNorm, which a rotation of the hidden channels does "
            "not commute with; rotation supports the RMSNorm families (Llama, Qwen2, Mistral)"
        )
    output_embeddings = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output_embeddings is not None and output_embeddings.weight is family.embeddings()[0].weight:
        return (
            f"hidden_rotation: {type(model).__name__} ties its LM head to the input embeddings "
            "(tie_word_embeddings=True); the final norm's weight cannot be folded into the shared matrix"
        )
    if not family.head_readers():
        return (
            f"hidden_rotation: {type(model).__name__} returns the hidden states themselves (no head reads them "
            "inside the model), and rotating would change them"
        )
    return None


def _norm_readers(family: Family) -> list[tuple[nn.Module, list[nn.Module]]]:
    """Every RMSNorm with the linear layers that read its output."""
    pairs = []
    for layer in family.layer_list():
        parts = family.layer_parts(layer)
        attention_norm, mlp_norm = parts.norms
        pairs.append((attention_norm, [parts.q, parts.k, parts.v]))
        pairs.append((mlp_norm, list(parts.mlp_inputs)))
    pairs.append((family.other_norms()[0], family.head_readers()))
    return pairs


def residual_covariance(family: Family, batches: Iterable[dict]) -> torch.Tensor:
    """``sum x^T x`` (float64, summed across ranks) of the RMS-normalised residual stream at every norm's input."""
    hidden = family.shape().hidden
    total = torch.zeros(hidden, hidden, dtype=torch.float64)

    def add(module, args):
        x = args[0].detach().reshape(-1, hidden).double()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-12)
        total.add_((x.T @ x).cpu())

    handles = [norm.register_forward_pre_hook(add) for norm, _ in _norm_readers(family)]
    forward_with_hooks(family.model, batches, handles)
    return all_reduce_sum_(total)


def principal_axes(covariance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(eigenvalues, Q)`` of a symmetric matrix, largest eigenvalue first; the same ``Q`` on every rank."""
    values, vectors = torch.linalg.eigh(covariance)
    order = torch.argsort(values, descending=True)
    values, vectors = values[order].contiguous(), vectors[:, order].contiguous()
    return broadcast_(values), broadcast_(vectors)


def _set(parameter: nn.Parameter, value: torch.Tensor) -> None:
    """Write in place, so an optimizer already holding the parameter keeps training it."""
    parameter.data.copy_(value.to(parameter.dtype))


def _rotate_output_(module: nn.Module, rotation: torch.Tensor) -> None:
    """``y -> Q^T y`` for a Linear writing the residual stream."""
    q = rotation.to(module.weight.device)
    _set(module.weight, q.T @ module.weight.double())
    if getattr(module, "bias", None) is not None:
        _set(module.bias, q.T @ module.bias.double())


def _rotate_input_(module: nn.Module, rotation: torch.Tensor) -> None:
    """``W -> W Q`` for a Linear reading the residual stream."""
    _set(module.weight, module.weight.double() @ rotation.to(module.weight.device))


def fold_norm_weights_(family: Family) -> None:
    """Move every RMSNorm's weight into the columns of the layers reading it; the norms' weights become ones."""
    with torch.no_grad():
        for norm, readers in _norm_readers(family):
            scale = norm.weight.detach().double()
            for reader in readers:
                _set(reader.weight, reader.weight.double() * scale.to(reader.weight.device))
            norm.weight.data.fill_(1.0)


def rotate_residual_(family: Family, rotation: torch.Tensor) -> None:
    """Express the residual stream in the basis ``rotation`` (orthogonal, columns = new channels); the norms'
    weights must be ones (:func:`fold_norm_weights_`)."""
    with torch.no_grad():
        for embedding in family.embeddings():
            _set(embedding.weight, embedding.weight.double() @ rotation.to(embedding.weight.device))
        for layer in family.layer_list():
            parts = family.layer_parts(layer)
            for writer in parts.writers:
                _rotate_output_(writer, rotation)
        for _, readers in _norm_readers(family):
            for reader in readers:
                _rotate_input_(reader, rotation)


def rotate_hidden_(model: nn.Module, batches: Iterable[dict]) -> torch.Tensor:
    """Rotate ``model``'s residual stream (in place) onto the principal axes of its normalised activations over
    ``batches``; the outputs stay the same up to float rounding.

    Returns:
        The share of the normalised stream's energy each rotated channel carries (largest first, summing to 1).

    Raises:
        ValueError: a LayerNorm family or tied embeddings (:func:`rotation_refusal`), before anything changes.
    """
    family = family_of(unwrap_model(model))
    refusal = rotation_refusal(family)
    if refusal is not None:
        raise ValueError(refusal)
    values, rotation = principal_axes(residual_covariance(family, batches))  # the forward passes come first
    fold_norm_weights_(family)
    rotate_residual_(family, rotation)
    return values / values.sum()
