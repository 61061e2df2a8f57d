"""Pure math of one-shot pruning with weight reconstruction (SparseGPT, Frantar & Alistarh 2023).

A layer computes ``Y = W X``. Removing weights changes ``Y``; the layer-wise reconstruction problem is to choose the
mask and the remaining weights that keep ``||W X - W' X||^2`` small, given only ``H = X X^T`` (a ``[in, in]`` matrix
summed over calibration tokens). Optimal Brain Surgeon solves it one weight at a time: removing ``w_q`` costs
``w_q^2 / [H^-1]_qq`` and is best compensated by subtracting ``(w_q / [H^-1]_qq) [H^-1]_{q,:}`` from the rest of
the row. SparseGPT makes this affordable by removing weights column by column, left to right, so that every row
shares one sequence of inverse Hessians: the upper Cholesky factor of ``H^-1`` holds them all. Masks are chosen
per block of ``block_size`` columns (unstructured: the lowest-cost fraction of each block; N:M: the N lowest-cost
weights of every group of M) from the weights as already updated by the columns to their left.

Nothing here touches modules, hooks or processes: :mod:`hf_compress.pruning.one_shot` feeds it.

Example:

```python
>>> import torch
>>> from hf_compress.pruning.reconstruction import reconstruct_pruned
>>> x = torch.randn(64, 512)
>>> weight = torch.randn(8, 64)
>>> pruned, keep = reconstruct_pruned(weight, x @ x.T, sparsity=0.5)
>>> float((pruned == 0).float().mean())
0.5
```
"""

from __future__ import annotations

import torch

from hf_compress.pruning.patterns import parse_n_m


def input_gram(activations: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``X^T X`` in float32 over every token of ``activations`` (``[..., in]``), and how many tokens that was."""
    flat = activations.detach().reshape(-1, activations.shape[-1]).float()
    return flat.t() @ flat, flat.shape[0]


def _precision(tensor: torch.Tensor) -> torch.dtype:
    """float64 on CPU (cheap at these sizes, and the inverse is sensitive), float32 on accelerators."""
    return torch.float64 if tensor.device.type == "cpu" else torch.float32


def inverse_hessian_factor(hessian: torch.Tensor, dampening: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Upper Cholesky factor of ``(H + damp I)^-1`` and the mask of input features never seen (zero diagonal).

    ``dampening`` is relative to the mean diagonal, which keeps the inverse well conditioned when calibration
    tokens are few. Dead features get a unit diagonal so the factorisation exists; their weights are removed anyway.
    """
    hessian = hessian.to(_precision(hessian)).clone()
    dead = torch.diagonal(hessian) == 0
    hessian[dead, dead] = 1.0
    diagonal = torch.diagonal(hessian)
    damp = dampening * diagonal.mean()
    for _attempt in range(6):
        try:
            regularised = hessian + torch.eye(len(hessian), dtype=hessian.dtype, device=hessian.device) * damp
            inverse = torch.cholesky_inverse(torch.linalg.cholesky(regularised))
            return torch.linalg.cholesky(inverse, upper=True), dead
        except torch.linalg.LinAlgError:
            damp = damp * 10 if damp > 0 else diagonal.mean() * 1e-4  # rank-deficient: more damping, then retry
    raise ValueError("the calibration Hessian is not positive definite even after heavy dampening")


@torch.no_grad()
def reconstruct_pruned(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    sparsity: float = 0.5,
    pattern: str = "unstructured",
    *,
    block_size: int = 128,
    dampening: float = 0.01,
    keep: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune an ``[out, in]`` weight with SparseGPT; return ``(new weight, keep mask)``. The input is not modified.

    Args:
        weight: ``[out, in]`` weight (Conv1D weights must be transposed first).
        hessian: ``[in, in]`` sum (or mean) of ``x x^T`` over calibration inputs of this layer.
        sparsity: fraction removed in every block of columns (``"unstructured"``); N:M ignores it (``1 - N/M``).
        pattern: ``"unstructured"`` or ``"N:M"`` (keep N of every M consecutive input weights).
        block_size: columns whose masks are chosen together; a multiple of M for N:M.
        dampening: ridge added to ``H``, as a fraction of its mean diagonal.
        keep: a bool ``[out, in]`` mask chosen elsewhere (e.g. by ``PruningCallback``); the weights it removes are
            zeroed and compensated, and ``sparsity`` / ``pattern`` are not used to choose.
    """
    n_m = parse_n_m(pattern) if pattern != "unstructured" and keep is None else None
    if pattern != "unstructured" and n_m is None and keep is None:
        raise ValueError(f"pattern must be 'unstructured' or 'N:M' for SparseGPT; got {pattern!r}")
    rows, columns = weight.shape
    if hessian.shape != (columns, columns):
        raise ValueError(f"hessian must be [{columns}, {columns}] for a weight of shape {tuple(weight.shape)}")
    if n_m is not None:
        keep_n, group = n_m
        if columns % group:
            raise ValueError(f"pattern {pattern!r} needs in_features divisible by {group}; got {columns}")
        block_size = max(group, block_size // group * group)

    if keep is not None and keep.shape != weight.shape:
        raise ValueError(f"keep must have the weight's shape {tuple(weight.shape)}; got {tuple(keep.shape)}")
    given = None if keep is None else keep.to(device=weight.device, dtype=torch.bool)
    factor, dead = inverse_hessian_factor(hessian, dampening)
    work = weight.to(_precision(weight)).clone(memory_format=torch.contiguous_format)
    work[:, dead] = 0.0
    keep = torch.ones_like(work, dtype=torch.bool)
    for start in range(0, columns, block_size):
        stop = min(start + block_size, columns)
        block = work[:, start:stop].clone(memory_format=torch.contiguous_format)
        block_factor = factor[start:stop, start:stop]
        errors = torch.zeros_like(block)
        block_keep = torch.ones_like(block, dtype=torch.bool)
        if given is not None:
            block_keep = given[:, start:stop].clone()
        elif n_m is None:
            cost = block.pow(2) / torch.diagonal(block_factor).pow(2).unsqueeze(0)
            remove = int(round(sparsity * cost.numel()))
            if remove:
                lowest = torch.topk(cost.flatten(), remove, largest=False).indices
                block_keep.view(-1)[lowest] = False
        for column in range(stop - start):
            if n_m is not None and column % group == 0:
                cost = block[:, column : column + group].pow(2)
                cost = cost / torch.diagonal(block_factor)[column : column + group].pow(2).unsqueeze(0)
                lowest = torch.topk(cost, group - keep_n, dim=1, largest=False).indices
                block_keep[:, column : column + group].scatter_(1, lowest, False)
            pivot = block_factor[column, column]
            original = block[:, column]
            kept = torch.where(block_keep[:, column], original, torch.zeros_like(original))
            error = (original - kept) / pivot
            block[:, column:] -= error.unsqueeze(1) * block_factor[column, column:].unsqueeze(0)
            block[:, column] = kept  # exact zeros, untouched by rounding in the update above
            errors[:, column] = error
        work[:, start:stop] = block
        keep[:, start:stop] = block_keep
        work[:, stop:] -= errors @ factor[start:stop, stop:]
    work[~keep] = 0.0
    return work.to(weight.dtype), keep
