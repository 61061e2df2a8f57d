"""Which weights may be removed together: ``unstructured``, ``N:M`` (e.g. ``"2:4"``), ``row`` and ``head``.

All functions work on one module's scores in the uniform ``[out_features, in_features]`` layout and return a boolean
*keep* mask of the same shape (True = the weight stays). Masks are monotone: a weight already pruned (``keep`` False)
stays pruned, so the zeros of an already sparse model are kept.

- ``unstructured``: the lowest-scoring weights, exactly ``round(sparsity * numel)`` of them.
- ``N:M``: at most N non-zeros in every block of M consecutive weights along the input dimension (M must divide
  ``in_features``, N < M). While the schedule ramps, the weights pruned are the lowest-scoring among the ``M - N``
  lowest of each block, so the budget of a block is never exceeded; at the final sparsity ``1 - N/M`` every block
  has exactly its ``M - N`` zeros (more only where the model already had zeros).
- ``row``: whole output neurons, ranked by the mean score of their kept weights; ``round(sparsity * out)`` rows.
- ``head``: whole attention heads across q/k/v/o; needs the model, see :mod:`hf_compress.pruning.heads`.

The registry holds ``unstructured``, ``row``, ``head`` and the family ``n:m``: any name matching ``N:M`` (digits) is
resolved to it with its N and M. A plugin pattern is a function ``(scores, sparsity, *, keep=None) -> keep mask``
registered under kind ``pruning_pattern``; it works with ``scope="layer"``.

```python
>>> import torch
>>> from hf_compress.pruning.patterns import compute_mask
>>> mask = compute_mask(torch.arange(8.0).view(1, 8), 0.5, "2:4")
>>> mask.int().tolist()
[[0, 0, 1, 1, 0, 0, 1, 1]]

```
"""

from __future__ import annotations

import re

import torch

NM_REGEX = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")
BUILTIN_PATTERNS = ("unstructured", "row", "head", "n:m")
ELEMENT_PATTERNS = ("unstructured", "n:m")


def parse_n_m(pattern: str) -> tuple[int, int] | None:
    """``(N, M)`` for a string like ``"2:4"``, None for any other pattern name."""
    if not isinstance(pattern, str):
        return None
    match = NM_REGEX.match(pattern)
    return (int(match.group(1)), int(match.group(2))) if match else None


def validate_pattern(pattern: str, field: str = "pattern") -> str:
    """The normalised pattern name (``"2:4"``, ``"row"``...); a ValueError names the field and the allowed values."""
    from hf_compress.registry import validate_name

    if not isinstance(pattern, str):
        raise ValueError(
            f"{field} must be a string: 'unstructured', 'row', 'head' or 'N:M' like '2:4'; got {pattern!r}"
        )
    n_m = parse_n_m(pattern)
    if n_m is not None:
        n, m = n_m
        if not 0 < n < m:
            raise ValueError(f"{field}: N:M pattern {pattern!r} needs 0 < N < M (e.g. '2:4'); got N={n}, M={m}")
        return f"{n}:{m}"
    if ":" in pattern:
        raise ValueError(f"{field}: {pattern!r} is not a valid N:M pattern; write two integers like '2:4' (N < M)")
    return validate_name("pruning_pattern", pattern, field)


def pattern_family(pattern: str) -> str:
    """The registry name of a pattern: ``"n:m"`` for ``"2:4"``, else the name itself."""
    return "n:m" if parse_n_m(pattern) else pattern.lower()


def pattern_final_sparsity(pattern: str) -> float | None:
    """``1 - N/M`` for an N:M pattern, None otherwise (the config's target then decides)."""
    n_m = parse_n_m(pattern)
    return None if n_m is None else 1.0 - n_m[0] / n_m[1]


def check_pattern_fits(pattern: str, name: str, in_features: int, field: str = "pattern") -> None:
    """Raise a ValueError when an N:M pattern's M does not divide the module's input dimension."""
    n_m = parse_n_m(pattern)
    if n_m is not None and in_features % n_m[1] != 0:
        raise ValueError(
            f"{field}: N:M pattern {pattern!r} needs M={n_m[1]} to divide in_features, but module {name!r} has "
            f"in_features={in_features}; exclude it (exclude=[...]) or pick an M that divides it"
        )


# ---------------------------------------------------------------- units: what is pruned together, with its score
def unit_scores(scores: torch.Tensor, pattern: str, keep: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """Scores of the prunable units of one module and the number of weights per unit.

    Already pruned units score ``-inf`` (always counted as pruned); units the pattern does not allow to prune
    (beyond a block's N:M budget) score ``+inf``. Returns ``(scores [units], unit_size)``.
    """
    scores = scores.detach().float()
    family = pattern_family(pattern)
    if family == "row":
        if keep is None:
            return scores.mean(dim=1), scores.shape[1]
        kept = keep.sum(dim=1)
        row = (scores * keep).sum(dim=1) / kept.clamp(min=1)
        return row.masked_fill(kept == 0, float("-inf")), scores.shape[1]
    flat = scores.reshape(-1).clone()
    if keep is not None:
        flat.masked_fill_(~keep.reshape(-1), float("-inf"))
    if family == "n:m":
        n, m = parse_n_m(pattern)
        blocks = flat.view(-1, m)
        # candidates: the M - N lowest of each block (already pruned ones, at -inf, come first)
        order = blocks.argsort(dim=1, stable=True)
        allowed = torch.zeros_like(blocks, dtype=torch.bool).scatter_(1, order[:, : m - n], True)
        blocks.masked_fill_(~allowed & (blocks != float("-inf")), float("inf"))
    return flat, 1


def keep_from_pruned_units(pruned: torch.Tensor, pattern: str, shape: torch.Size) -> torch.Tensor:
    """Expand a bool vector of pruned units back to a ``[out, in]`` keep mask."""
    if pattern_family(pattern) == "row":
        return (~pruned).unsqueeze(1).expand(shape).clone()
    return (~pruned).view(shape)


def lowest_units(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Bool vector marking exactly ``count`` lowest scores (``-inf`` ones always included, ``+inf`` never)."""
    forced = scores == float("-inf")
    allowed = int((scores != float("inf")).sum())
    count = min(max(count, int(forced.sum())), allowed)
    pruned = torch.zeros_like(scores, dtype=torch.bool)
    if count > 0:
        pruned[torch.topk(scores, count, largest=False, sorted=False).indices] = True
    return pruned


def units_for_sparsity(sparsity: float, num_units: int) -> int:
    return int(round(sparsity * num_units))


def compute_mask(
    scores: torch.Tensor, sparsity: float, pattern: str = "unstructured", *, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """The keep mask (bool, ``[out, in]``) of one module at ``sparsity`` for ``unstructured``, ``N:M`` or ``row``.

    Args:
        scores (`torch.Tensor`): ``[out, in]`` importance scores (higher = more important), e.g. ``weight.abs()``.
        sparsity (`float`): fraction of weights (``row``: of rows) to remove, in [0, 1). For ``N:M`` at most
            ``1 - N/M`` is reachable; asking more gives exactly the N:M pattern.
        pattern (`str`): ``"unstructured"``, ``"row"``, an N:M string like ``"2:4"``, or a plugin pattern name.
        keep (`torch.Tensor`, *optional*): the current keep mask; what it prunes stays pruned.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be a 2-D [out, in] tensor; got shape {tuple(scores.shape)}")
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1]; got {sparsity!r}")
    family = pattern_family(pattern)
    if family == "head":
        raise ValueError(
            "pattern: 'head' prunes whole heads across the q/k/v/o modules of an attention block and needs the model; "
            "use PruningCallback or hf_compress.pruning.heads.find_attention_heads. Allowed here: 'unstructured', "
            "'row', 'N:M'"
        )
    if family not in BUILTIN_PATTERNS:
        from hf_compress.registry import get_registry

        return get_registry().get("pruning_pattern", family)(scores, sparsity, keep=keep).to(torch.bool)
    check_pattern_fits(pattern, "scores", scores.shape[1])
    units, _ = unit_scores(scores, pattern, keep)
    pruned = lowest_units(units, units_for_sparsity(sparsity, units.numel()))
    return keep_from_pruned_units(pruned, pattern, scores.shape)


class _PatternMarker:
    """Registry entry for a built-in pattern (the work is done by the functions of this module)."""

    def __init__(self, name: str, description: str) -> None:
        self.name = name
        self.description = description
        self.__doc__ = description

    def __call__(
        self, scores: torch.Tensor, sparsity: float, *, keep: torch.Tensor | None = None, pattern: str | None = None
    ) -> torch.Tensor:
        if self.name == "n:m" and parse_n_m(pattern or "") is None:
            raise ValueError("pattern: the n:m family needs its N and M, written like '2:4'")
        return compute_mask(scores, sparsity, pattern or self.name, keep=keep)

    def __repr__(self) -> str:
        return f"<pruning pattern {self.name}>"


PATTERN_ENTRIES = {
    "unstructured": _PatternMarker("unstructured", "Any weights, the lowest-scoring first."),
    "row": _PatternMarker("row", "Whole output neurons (rows of the [out, in] weight)."),
    "head": _PatternMarker("head", "Whole attention heads across q/k/v/o (GPT-2, Llama-style, BERT-style)."),
    "n:m": _PatternMarker("n:m", "N:M family, written like '2:4': at most N non-zeros per M consecutive inputs."),
}
