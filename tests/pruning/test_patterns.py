"""Patterns and scope as pure functions: exact counts, N:M exactness, rows, heads on three families, global threshold."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_bert, tiny_gpt2, tiny_llama
from hf_compress.pruning.heads import find_attention_heads
from hf_compress.pruning.patterns import compute_mask, unit_scores
from hf_compress.pruning.scope import global_threshold, select_global


def scores(out=16, inp=32, seed=0):
    return torch.randn(out, inp, generator=torch.Generator().manual_seed(seed)).abs()


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.37, 0.5, 0.9])
def test_unstructured_prunes_exactly_the_lowest(sparsity):
    s = scores()
    keep = compute_mask(s, sparsity, "unstructured")
    pruned = (~keep).sum().item()
    assert pruned == round(sparsity * s.numel())
    if 0 < pruned < s.numel():
        assert s[~keep].max() <= s[keep].min()


def test_existing_zeros_stay_pruned_and_count():
    s = scores()
    existing = torch.ones_like(s, dtype=torch.bool)
    existing[0, :8] = False  # high-scoring but already pruned
    s[0, :8] = 100.0
    keep = compute_mask(s, 0.25, "unstructured", keep=existing)
    assert not keep[0, :8].any()
    assert (~keep).sum().item() == round(0.25 * s.numel())


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (4, 8)])
def test_n_m_final_pattern_is_exact(n, m):
    s = scores(8, 32)
    keep = compute_mask(s, 1 - n / m, f"{n}:{m}")
    blocks = keep.view(8, -1, m)
    assert (blocks.sum(-1) == n).all()
    # within each block the kept weights are the N largest
    kept_min = torch.where(blocks, s.view(8, -1, m), torch.inf).amin(-1)
    pruned_max = torch.where(~blocks, s.view(8, -1, m), -torch.inf).amax(-1)
    assert (pruned_max <= kept_min).all()


def test_n_m_ramp_never_exceeds_a_block_budget_and_is_monotone():
    s = scores(8, 32, seed=3)
    previous = torch.ones_like(s, dtype=torch.bool)
    for sparsity in [0.1, 0.2, 0.3, 0.4, 0.5]:
        keep = compute_mask(s, sparsity, "2:4", keep=previous)
        assert ((~keep).view(8, -1, 4).sum(-1) <= 2).all()
        assert (~keep).sum().item() == round(sparsity * s.numel())
        assert not (keep & ~previous).any()
        previous = keep
    assert (previous.view(8, -1, 4).sum(-1) == 2).all()


def test_n_m_needs_m_to_divide_in_features():
    with pytest.raises(ValueError, match="in_features=30"):
        compute_mask(scores(4, 30), 0.5, "2:4")


def test_row_prunes_whole_lowest_rows():
    s = scores()
    s[3] *= 0.01
    s[7] *= 0.02
    keep = compute_mask(s, 2 / 16, "row")
    assert (~keep).all(dim=1).nonzero().flatten().tolist() == [3, 7]
    assert keep.sum().item() == 14 * 32


def test_head_pattern_needs_the_model():
    with pytest.raises(ValueError, match="head"):
        compute_mask(scores(), 0.5, "head")


@pytest.mark.parametrize(
    "factory,units,modules",
    [
        (tiny_gpt2, 4, ["transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj"]),
        (
            tiny_llama,
            2,  # 4 query heads sharing 2 key/value heads: the unit is a key/value group
            [f"model.layers.0.self_attn.{p}_proj" for p in "kqvo"],
        ),
        (
            tiny_bert,
            4,
            [f"bert.encoder.layer.0.attention.self.{p}" for p in ("key", "query", "value")]
            + ["bert.encoder.layer.0.attention.output.dense"],
        ),
    ],
)
def test_head_units_cover_q_k_v_o_on_three_families(factory, units, modules):
    model = factory(0)
    blocks = find_attention_heads(model)
    assert len(blocks) == 2
    block = blocks[0]
    assert block.num_units == units
    assert block.modules == sorted(modules)
    # units partition the q/k/v/o weights exactly
    total = sum(block.shapes[name][0] * block.shapes[name][1] for name in block.modules)
    assert block.unit_size * block.num_units == total
    keeps = {name: torch.ones(block.shapes[name], dtype=torch.bool) for name in block.modules}
    pruned = torch.zeros(units, dtype=torch.bool)
    pruned[1] = True
    block.apply_pruned_units(pruned, keeps)
    assert sum(int((~k).sum()) for k in keeps.values()) == block.unit_size
    assert block.pruned_units(keeps).tolist() == [i == 1 for i in range(units)]


def test_head_pattern_on_an_unknown_layout_raises():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
    with pytest.raises(ValueError, match="pattern: 'head'.*known layouts"):
        find_attention_heads(model)


def test_global_threshold_is_the_exact_kth_value_without_concatenating():
    parts = [torch.randn(n, generator=torch.Generator().manual_seed(n)) for n in (100, 37, 512)]
    everything = torch.cat(parts)
    for k in (1, 50, 300, 649):
        threshold = global_threshold([lambda p=p: (p, 1) for p in parts], k)
        assert threshold == everything.sort().values[k - 1].item()
        pruned = select_global([lambda p=p: (p, 1) for p in parts], k)
        assert sum(int(p.sum()) for p in pruned) == k


def test_global_breaks_ties_to_the_exact_count():
    parts = [torch.zeros(10), torch.zeros(10)]
    pruned = select_global([lambda p=p: (p, 1) for p in parts], 13)
    assert [int(p.sum()) for p in pruned] == [10, 3]


def test_global_units_with_sizes_and_forced_ones():
    rows, size = unit_scores(scores(4, 8), "row")
    assert size == 8 and rows.shape == (4,)
    forced = torch.tensor([float("-inf"), 1.0, 2.0])
    pruned = list(select_global([lambda: (forced, 8)], 0))
    assert pruned[0].tolist() == [True, False, False]
