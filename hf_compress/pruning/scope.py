"""Global scope: one score threshold across every targeted module, found without concatenating the scores.

The threshold is the exact ``count``-th smallest unit score over all modules: a binary search over the 2^32 float32
values in their sort order (via their bit patterns), each probe counting, module by module, how many weights score at
or below it. At most 33 counting passes; extra memory is one module's scores and a boolean tensor of that size at a
time (never a copy of all scores). Accuracy: exact -- the number of pruned weights is exactly ``count`` for
unstructured and N:M (ties at the threshold are broken in module order, then index order); for ``row`` / ``head``
units it overshoots by less than one unit.

```python
>>> import torch
>>> from hf_compress.pruning.scope import select_global
>>> a, b = torch.tensor([0.1, 5.0, 0.3]), torch.tensor([0.2, 4.0])
>>> [p.tolist() for p in select_global([lambda: (a, 1), lambda: (b, 1)], count=3)]
[[True, False, True], [True, False]]

```
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterator, Sequence

import torch

UnitScoreFn = Callable[[], "tuple[torch.Tensor, int]"]


def _key(value: float) -> int:
    """A signed int whose order is the float32 order of ``value``."""
    bits = struct.unpack("<i", struct.pack("<f", value))[0]
    return bits if bits >= 0 else bits ^ 0x7FFFFFFF


def _value(key: int) -> float:
    bits = key if key >= 0 else key ^ 0x7FFFFFFF
    return struct.unpack("<f", struct.pack("<i", bits))[0]


def count_at_or_below(unit_score_fns: Sequence[UnitScoreFn], threshold: float) -> int:
    """Weights (units times unit size) whose score is ``<= threshold``, over all modules, one module at a time."""
    total = 0
    for fn in unit_score_fns:
        scores, unit_size = fn()
        total += int((scores <= threshold).sum()) * unit_size
    return total


def global_threshold(unit_score_fns: Sequence[UnitScoreFn], count: int) -> float:
    """The smallest float32 ``t`` with at least ``count`` weights scoring ``<= t`` (the exact k-th smallest score)."""
    low, high = _key(-math.inf), _key(math.inf)
    while low < high:
        middle = (low + high) // 2
        if count_at_or_below(unit_score_fns, _value(middle)) >= count:
            high = middle
        else:
            low = middle + 1
    return _value(low)


def select_global(unit_score_fns: Sequence[UnitScoreFn], count: int) -> Iterator[torch.Tensor]:
    """For each module in turn, a bool vector of the units to prune so that ``count`` weights are pruned in all.

    A generator: apply each vector before asking for the next, and at most one module's scores and pruned vector
    are alive at once (the first pass keeps only counts). Units scoring ``-inf`` (already pruned) are always pruned;
    ``+inf`` (not prunable) never. Ties at the threshold are taken in module order until ``count`` is reached.
    """
    threshold = global_threshold(unit_score_fns, count) if count > 0 else -math.inf
    below, tied, sizes = [], [], []
    for fn in unit_score_fns:
        scores, unit_size = fn()
        pruned = (scores < threshold) | (scores == -math.inf)
        below.append(int(pruned.sum()))
        tied.append(int(((scores == threshold) & ~pruned & (scores != math.inf)).sum()))
        sizes.append(unit_size)
        del scores, pruned
    pruned_total = sum(n * size for n, size in zip(below, sizes))
    take_ties = []
    for ties, unit_size in zip(tied, sizes):
        needed = 0 if pruned_total >= count else min(ties, math.ceil((count - pruned_total) / unit_size))
        take_ties.append(needed)
        pruned_total += needed * unit_size
    for fn, needed in zip(unit_score_fns, take_ties):
        scores, _ = fn()
        pruned = (scores < threshold) | (scores == -math.inf)
        if needed:
            ties = ((scores == threshold) & ~pruned & (scores != math.inf)).nonzero().flatten()
            pruned[ties[:needed]] = True
        yield pruned
