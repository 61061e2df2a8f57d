"""Checking an export after it is written: a fixed batch, the model's outputs on it, and the reloaded weights.

Example:

```python
>>> from transformers import GPT2Config, GPT2LMHeadModel
>>> from hf_compress.quantization.export_verify import fixed_batch, model_outputs
>>> model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=1, n_head=4))
>>> batch = fixed_batch(model)
>>> tuple(batch["input_ids"].shape), tuple(model_outputs(model, batch).shape)
((2, 16), (2, 16, 64))
```
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hf_compress.quantization.export_source import QuantizedLayer
from hf_compress.targets import is_conv1d

BATCH_SIZE = 2
SEQUENCE_LENGTH = 16
SEED = 0


def fixed_batch(model: nn.Module, sample_inputs=None) -> dict[str, torch.Tensor]:
    """The batch every export is checked on: ``sample_inputs`` (a dict of tensors or an ``input_ids`` tensor), or
    token ids drawn with a fixed seed from the model's vocabulary."""
    if isinstance(sample_inputs, dict):
        return {key: value for key, value in sample_inputs.items()}
    if torch.is_tensor(sample_inputs):
        return {"input_ids": sample_inputs, "attention_mask": torch.ones_like(sample_inputs)}
    if sample_inputs is not None:
        raise ValueError(
            f"sample_inputs must be a dict of tensors, an input_ids tensor or None; got {type(sample_inputs).__name__}"
        )
    config = model.config
    vocab_size = getattr(config, "vocab_size", None)
    if not vocab_size:
        raise ValueError(
            f"cannot make a verification batch for {type(model).__name__} (its config has no vocab_size); pass "
            "sample_inputs={'input_ids': ..., ...}"
        )
    max_length = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    length = min(SEQUENCE_LENGTH, max_length or SEQUENCE_LENGTH)
    generator = torch.Generator().manual_seed(SEED)
    input_ids = torch.randint(0, vocab_size, (BATCH_SIZE, length), generator=generator)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


@torch.no_grad()
def model_outputs(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's main output (``logits``, else the first output) on ``batch``, as float32 on CPU.

    The model runs in eval mode; its train/eval mode is restored afterwards.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        output = model(**{key: value.to(device) for key, value in batch.items()})
    finally:
        model.train(was_training)
    main = getattr(output, "logits", None)
    if main is None:
        main = output[0] if isinstance(output, (tuple, list)) else next(iter(output.values()))
    return main.detach().float().cpu()


def exported_weight(module: nn.Module) -> torch.Tensor:
    """A reloaded module's weight values as ``[out, in]`` float32 (quanto tensors are dequantized)."""
    weight = module.weight
    if type(weight) not in (torch.Tensor, nn.Parameter):  # a quanto tensor
        weight = weight.dequantize()
    weight = weight.detach().float().cpu()
    return weight.t() if is_conv1d(module) else weight


@dataclass
class WeightCheck:
    """How the reloaded weights compare with the grid values that were meant to be written."""

    max_abs_diff: float
    zeros_kept: bool
    sparsity: float


@torch.no_grad()
def check_weights(reloaded: nn.Module, layers: dict[str, QuantizedLayer]) -> WeightCheck:
    """Compare each quantized layer of the reloaded model with its grid values and the zeros of the source model."""
    max_diff, zeros_kept, zeros, total = 0.0, True, 0, 0
    for name, layer in layers.items():
        weight = exported_weight(reloaded.get_submodule(name))
        max_diff = max(max_diff, (weight - layer.dequantized()).abs().max().item())
        if layer.source_zeros is not None and bool((weight[layer.source_zeros] != 0).any()):
            zeros_kept = False
        zeros += int((weight == 0).sum())
        total += weight.numel()
    return WeightCheck(max_diff, zeros_kept, zeros / max(total, 1))
