"""Direct tests of the text analysis under the lexical checker: tokens, quantities with units, dates, number words,
names and negation. Sentences are made up for these tests."""

import pytest

from hf_compress.metrics.text_analysis import analyse, tokenize


def only_quantity(text: str):
    quantities = analyse(text).quantities
    assert len(quantities) == 1, quantities
    return quantities[0]


def test_tokens_keep_offsets_and_strip_possessives():
    tokens = tokenize("Marlow's bridge, 1,250 m!")
    assert [(t.kind, t.text) for t in tokens] == [
        ("word", "Marlow's"),
        ("word", "bridge"),
        ("punct", ","),
        ("num", "1,250"),
        ("word", "m"),
        ("punct", "!"),
    ]
    assert tokens[0].bare == "marlow"
    assert all("Marlow's bridge, 1,250 m!"[t.start : t.end] == t.text for t in tokens)


@pytest.mark.parametrize(
    "left, right, same",
    [
        ("The canal is 1,250 m long.", "The canal is 1.25 km long.", True),
        ("The canal is 1,250 m long.", "The canal is 1.4 km long.", False),
        ("The ferry weighs 4,100 tonnes.", "The ferry weighs 4.1 million kg.", True),
        ("The lake holds about 600 km of shoreline.", "The lake holds 620 km of shoreline.", True),  # hedged: 5%
        ("The lake holds 600 km of shoreline.", "The lake holds 620 km of shoreline.", False),
        ("The choir has two hundred singers.", "The choir has 200 singers.", True),
    ],
)
def test_quantities_compare_in_base_units(left, right, same):
    assert only_quantity(left).matches(only_quantity(right)) is same


def test_different_dimensions_never_compare():
    length, count = only_quantity("The path is 12 km long."), only_quantity("The poet wrote 12 odes.")
    assert length.dimension == "[length]" and count.dimension is None
    assert count.nouns == frozenset({"ode"})
    assert not length.comparable(count) and not length.matches(count)


@pytest.mark.parametrize(
    "left, right, same",
    [
        ("The mill opened on 3 March 1902.", "The mill opened on March 3, 1902.", True),
        ("The mill opened on 3 March 1902.", "The mill opened on March 4, 1902.", False),
        ("The mill opened in 1902.", "The mill opened on 3 March 1902.", True),  # less precise, not contradicting
        ("The mill opened in the 1900s.", "The mill opened in 1902.", True),
        ("The mill opened in the 1910s.", "The mill opened in 1902.", False),
    ],
)
def test_dates_match_on_the_parts_both_name(left, right, same):
    a, b = only_quantity(left), only_quantity(right)
    assert a.dimension == b.dimension == "date"
    assert a.matches(b) is same


def test_percent_and_ordinal_have_their_own_dimensions():
    assert only_quantity("She took 38% of the votes.").dimension == "percent"
    ordinal = only_quantity("The boat finished third.")
    assert (ordinal.dimension, ordinal.value) == ("ordinal", 3.0)


def test_names_and_negation():
    found = analyse("Ilse Varga did not paint the mural in Tallinn.")
    assert ("ilse", "varga") in [entity.words for entity in found.entities]
    assert ("tallinn",) in [entity.words for entity in found.entities]
    assert found.negated and found.negation_cue == "not"
    contracted = analyse("The mural isn't in Riga.")
    assert contracted.negated and contracted.negation_cue == "isn't"
    assert not analyse("The mural is in Riga.").negated
