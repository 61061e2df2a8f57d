"""The claim logic of the default checker on new sentences (none from any benchmark), one test per claim kind, and
the library-backed pieces under it (hf_compress.metrics.language, text_analysis) tested directly."""

from __future__ import annotations

import time

import pytest

import hf_compress
from hf_compress.metrics import language
from hf_compress.metrics.text_analysis import analyse

POLE = [
    "Roald Amundsen reached the South Pole in December 1911.",
    "Robert Falcon Scott arrived at the pole five weeks later, in January 1912.",
]
BRIDGE = [
    "The Golden Gate Bridge opened in 1937.",
    "Joseph Strauss was the chief engineer, and Charles Ellis did much of the structural design.",
    "Its main span is 1,280 metres long.",
]
RIVER = ["The Danube flows into the Black Sea.", "It passes through Vienna before it reaches Budapest."]
CAFE = ["The cafe opens at 7 a.m. and closes at 6 p.m.", "It serves espresso made from Ethiopian beans."]


@pytest.fixture(scope="module")
def metric():
    return hf_compress.load_metric("hallucination")


def judge(metric, claim, facts):
    result = metric.compute(predictions=[claim], references=[facts])
    (judged,) = result["details"][0]["claims"]
    return judged


@pytest.mark.parametrize(
    ("kind", "claim", "facts", "label", "span"),
    [
        (
            "role swap",
            "Robert Falcon Scott reached the South Pole in December 1911.",
            POLE,
            "contradicted",
            "Robert Falcon Scott",
        ),
        (
            "role swap",
            "Charles Ellis was the chief engineer of the Golden Gate Bridge.",
            BRIDGE,
            "contradicted",
            "Charles Ellis",
        ),
        (
            "order swap",
            "The Danube passes through Budapest before it reaches Vienna.",
            RIVER,
            "contradicted",
            "Budapest ... Vienna",
        ),
        ("entity from elsewhere", "The Danube flows into the Caspian Sea.", RIVER, "contradicted", "Caspian Sea"),
        (
            "date swap in topic",
            "Roald Amundsen reached the South Pole in January 1912.",
            POLE,
            "contradicted",
            "January 1912",
        ),
        ("date", "The Golden Gate Bridge opened in 1933.", BRIDGE, "contradicted", "1933"),
        ("number", "The bridge's main span is 1,820 metres long.", BRIDGE, "contradicted", "1,820 metres"),
        ("unit", "The main span is 1,280 feet long.", BRIDGE, "contradicted", "1,280 feet"),
        ("negation", "The cafe does not serve espresso.", CAFE, "contradicted", "not"),
        ("negation", "The Danube never flows into the Black Sea.", RIVER, "contradicted", "never"),
        ("restatement", "Roald Amundsen reached the South Pole in December 1911.", POLE, "supported", None),
        ("paraphrase", "Amundsen got to the South Pole in December 1911.", POLE, "supported", None),
        ("paraphrase", "Joseph Strauss was the chief engineer of the Golden Gate Bridge.", BRIDGE, "supported", None),
        ("unit conversion", "The bridge's main span is about 1.28 km long.", BRIDGE, "supported", None),
        ("number format", "The bridge's main span is 1280 m long.", BRIDGE, "supported", None),
        ("order kept", "The Danube reaches Budapest after it passes through Vienna.", RIVER, "supported", None),
    ],
)
def test_claim_kinds(metric, kind, claim, facts, label, span):
    judged = judge(metric, claim, facts)
    assert judged["label"] == label, (kind, judged)
    assert judged["contradicting_span"] == span, (kind, judged)
    assert judged["evidence_sentence"] is not None and judged["evidence"] in facts


def test_evidence_sentence_is_the_sentence_of_a_long_reference(metric):
    article = " ".join(
        [
            "The museum was founded in 1889 by a group of local merchants.",
            "Its collection grew quickly during the next decade.",
            "In 1902 the museum moved to a larger building on the river.",
            "The new building was designed by the architect Helen Marsh.",
        ]
    )
    judged = judge(metric, "Helen Marsh designed the new building.", [article])
    assert judged["label"] == "supported"
    assert judged["evidence"] == article
    assert judged["evidence_sentence"] == "The new building was designed by the architect Helen Marsh."


def test_non_english_claims_are_unverified_not_scored(metric):
    everest = ["Mount Everest is 8,849 metres tall.", "It lies on the border between Nepal and China."]
    result = metric.compute(
        predictions=["它位于尼泊尔和印度之间。", "Der Mount Everest ist 8.849 Meter hoch.", "Everest lies in Peru."],
        references=[everest] * 3,
    )
    labels = [[claim["label"] for claim in detail["claims"]] for detail in result["details"]]
    assert labels == [["unverified"], ["unverified"], ["contradicted"]]
    assert [claim["language"] for detail in result["details"][:2] for claim in detail["claims"]] == ["zh", "de"]
    assert result["details"][0]["claims"][0]["score"] is None and result["scores"][:2] == [0.0, 0.0]
    assert result["num_unverified"] == 2 and result["num_claims"] == 1 and result["hallucination_rate"] == 1.0


def test_continental_thousands_separator_matches(metric):
    everest = ["Mount Everest is 8,849 metres tall."]
    assert judge(metric, "Everest is 8.849 Meter tall.", everest)["label"] == "supported"
    assert judge(metric, "Everest is 8.611 Meter tall.", everest)["label"] == "contradicted"


def test_a_100000_character_prediction_finishes_in_bounded_time(metric):
    sentence = "The Danube flows into the Black Sea and it passes through Vienna before it reaches Budapest. "
    text = (sentence * (100_000 // len(sentence) + 1))[:100_000]
    unbroken = "word " * 20_000  # no sentence boundary at all
    start = time.perf_counter()
    result = metric.compute(predictions=[text, unbroken], references=[RIVER, RIVER])
    assert time.perf_counter() - start < 60
    assert result["details"][0]["num_claims"] > 1000 and result["details"][1]["num_claims"] >= 1


# ------------------------------------------------------------------------------------------------ libraries under it
def test_language_keys_weights_and_function_words():
    assert language.word_key("won") == language.word_key("wins") == language.word_key("winning")
    assert language.word_key("constructed") == language.word_key("construction")
    assert language.word_key("Amundsen's") == language.word_key("amundsen")
    assert language.word_weight("the") < language.word_weight("city") < language.word_weight("espresso") == 1.0
    assert language.is_function_word("the") and language.is_function_word("which")
    assert not language.is_function_word("before") and not language.is_function_word("high")
    assert language.is_verb("reached") and language.is_verb("lies") and not language.is_verb("summit")


def test_language_numbers_units_months_sentences():
    assert language.number_word_value("twenty-one") == 21 and language.number_word_value("espresso") is None
    assert language.digits_for_number_words("eight thousand metres") == "8000 metres"
    assert language.digits_for_ordinal("first") == "1st"
    metre, foot, kilometre = language.unit("metres"), language.unit("feet"), language.unit("km")
    assert metre.dimension == foot.dimension == kilometre.dimension == "[length]"
    assert kilometre.factor == pytest.approx(1000) and foot.factor == pytest.approx(0.3048)
    fahrenheit = language.unit("°F")
    assert 212 * fahrenheit.factor + fahrenheit.offset == pytest.approx(373.15)
    assert language.unit("degrees Celsius").offset == pytest.approx(273.15)
    assert language.unit("in") is None and language.unit("espresso") is None
    assert language.month_number("Sept.") == 9 and language.month_number("espresso") is None
    assert language.split_sentences("Dr. Marsh met Mr. Lee in the U.S. in 1999. They talked.") == [
        "Dr. Marsh met Mr. Lee in the U.S. in 1999.",
        "They talked.",
    ]


def test_language_identification():
    assert language.language_of("Everest is 8849 m tall.") == "en"
    assert language.language_of("i like michael caine too") == "en"
    assert language.language_of("它位于尼泊尔和印度之间") == "zh"
    assert language.language_of("Le mont Everest mesure 8 849 mètres.") == "fr"
    assert language.same_name("Tenzing Norgay", "Tenzing Norkay") and not language.same_name("Vienna", "Venice")


def test_text_analysis_quantities_names_negation():
    claim = analyse("About 1.81 million cars were sold in May 2019 for $5 billion.")
    assert any(q.dimension is None and q.value == pytest.approx(1.81e6) and q.hedged for q in claim.quantities)
    assert any(q.dimension == "date" and q.year == 2019 and q.month == 5 for q in claim.quantities)
    assert any(q.dimension == "currency $" and q.value == pytest.approx(5e9) for q in claim.quantities)
    assert [e.text for e in analyse("Roald Amundsen met Helen Marsh in Oslo.").entities] == [
        "Roald Amundsen",
        "Helen Marsh",
        "Oslo",
    ]
    assert analyse("The cafe doesn't serve tea.").negated and not analyse("The cafe serves tea.").negated
    assert not analyse("No river is longer than the Nile.").negated  # a superlative, not a negation
    ambiguous = analyse("It is 8.849 km long.").quantities[0]
    assert ambiguous.value == pytest.approx(8849) and ambiguous.alternatives == (pytest.approx(8849000),)
