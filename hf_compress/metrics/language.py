"""The English-language facts the claim logic needs, each from a well-kept library that carries its data and runs
offline (nothing here is a hand-written word list):

| what | library | replaces (before issue 16) |
|---|---|---|
| lemmas (``won`` -> ``win``) and parts of speech | lemminflect | a lemma table and a verb-form list |
| stems (``construction`` -> ``construct``) | snowballstemmer (Porter2) | a hand-written suffix stripper |
| function words | stop-words, filtered by wordfreq frequency | a stop-word list |
| how much a word says (common words weigh less) | wordfreq (Zipf frequency) | a "light words" list |
| number words (``twenty-one``, ``eight thousand``) | text2num | a number-word table |
| units and conversions (``8.85 km`` = ``8,850 m``, °F/°C) | pint | a unit table with factors and offsets |
| month names | calendar (standard library) | a month table |
| sentence boundaries (``Dr.``, ``U.S.``, ``Inc.``) | pysbd | an abbreviation list and a splitter |
| language identification | py3langid | (new: non-English claims are reported unverified) |
| spelling variants of names | rapidfuzz | (new) |

Measured and not used (``python benchmarks/hallucination_libraries.py``): dateparser's ``search_dates``, quantulum3
and number-parser together take 2.2 ms per claim, 6x the whole analysis here and 4x the metric's 0.5 ms-per-claim
budget, and they lose decades, fill unwritten days and months from today's date, read the verbs "may"/"march" as
dates, drop counted nouns and hedges, and turn ordinals into counts. So the grammar that finds dates, quantities and
hedges in a claim stays in :mod:`~hf_compress.metrics.text_analysis`, with pint and text2num under it.

```python
>>> from hf_compress.metrics.language import word_key, unit, number_word_value
>>> word_key("won") == word_key("wins"), word_key("constructed") == word_key("construction")
(True, True)
>>> unit("metres").dimension, round(unit("km").factor), unit("Meter").dimension
('[length]', 1000, '[length]')
>>> number_word_value("twenty-one"), number_word_value("table")
(21, None)
```
"""

from __future__ import annotations

import calendar
import logging
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import lemminflect
import snowballstemmer
import stop_words
import wordfreq
from rapidfuzz import fuzz
from text_to_num import alpha2digit, text2num

_STEMMER = snowballstemmer.stemmer("english")
_POS_ORDER = ("VERB", "NOUN", "ADJ", "ADV", "AUX")
# Words that are function words by stop-words' list but carry the facts of order, comparison and time that claims
# turn on ("before 1900", "more than", "the first"); they stay content words.
_ORDER_WORDS = frozenset(
    {"before", "after", "first", "last", "more", "most", "less", "least", "over", "under", "above"}
)
_ORDER_WORDS |= frozenset({"below", "until", "since", "only", "earlier", "later", "never", "not", "no", "nor"})
# A stop-words entry counts as a function word only when it is this common (Zipf scale): its long list also holds
# content words such as "act" or "adopted".
_FUNCTION_WORD_ZIPF = 5.0
_STOP_WORDS = frozenset(
    word
    for word in stop_words.get_stop_words("en")
    if word.isalpha()
    and word not in _ORDER_WORDS
    and wordfreq.zipf_frequency(word, "en") >= _FUNCTION_WORD_ZIPF
    and ("VERB" not in lemminflect.getAllLemmas(word) or "AUX" in lemminflect.getAllLemmas(word))
    and not {"ADJ"} & set(lemminflect.getAllLemmas(word))
)
# Content-word weight from frequency: rarer words say more. Full weight at or below COMMON_ZIPF, falling linearly to
# MIN_WEIGHT at VERY_COMMON_ZIPF. Chosen on the dev splits.
COMMON_ZIPF = 5.0
VERY_COMMON_ZIPF = 6.0
MIN_WEIGHT = 0.3

_MONTHS = {name.lower(): number for number, name in enumerate(calendar.month_name) if name}
_MONTHS.update({name.lower(): number for number, name in enumerate(calendar.month_abbr) if name})
_MONTHS["sept"] = 9


@lru_cache(maxsize=131072)
def lemmas(word: str) -> dict[str, tuple[str, ...]]:
    """lemminflect's lemmas of ``word`` by part of speech (empty for names and function words)."""
    return lemminflect.getAllLemmas(word)


@lru_cache(maxsize=131072)
def word_key(word: str) -> str:
    """The form two words share when they are the same word: lemma (lemminflect), then stem (Porter2)."""
    lower = word.lower().replace("\u2019", "'")
    if lower.endswith("'s"):
        lower = lower[:-2]
    found = lemmas(lower)
    lemma = next((found[pos][0] for pos in _POS_ORDER if pos in found), lower)
    return _STEMMER.stemWord(lemma.lower())


def is_function_word(word: str) -> bool:
    return word.lower() in _STOP_WORDS


@lru_cache(maxsize=131072)
def word_weight(word: str) -> float:
    """How much a content word says, from its frequency in English (wordfreq): 1.0 for rare words, less for common."""
    zipf = wordfreq.zipf_frequency(word.lower(), "en")
    if zipf <= COMMON_ZIPF:
        return 1.0
    share = min(1.0, (zipf - COMMON_ZIPF) / (VERY_COMMON_ZIPF - COMMON_ZIPF))
    return 1.0 - share * (1.0 - MIN_WEIGHT)


def is_dictionary_word(word: str) -> bool:
    """lemminflect knows the word (so a capitalised sentence-initial occurrence is not a name)."""
    return bool(lemmas(word.lower()))


@lru_cache(maxsize=131072)
def is_verb(word: str) -> bool:
    """The word can be a verb form other than a bare noun's (used to tell clauses from noun phrases)."""
    lower = word.lower()
    if lower.endswith("n't"):
        return True
    found = lemmas(lower)
    if "AUX" in found:
        return True
    if "VERB" not in found:
        return False
    # "summit", "lie": a noun that is also a verb counts as a verb only in an inflected form
    return "NOUN" not in found or found["VERB"][0] != lower or lower in {"is", "are"}


# ----------------------------------------------------------------------------------------------- numbers
def digits_for_number_words(text: str) -> str:
    """``text`` with number words written as digits (text2num): "eight thousand metres" -> "8000 metres"."""
    if not re.search(r"[a-z]", text):
        return text
    try:
        return alpha2digit(text, "en")
    except Exception:  # text2num refuses some inputs (odd Unicode); keep the text as it is
        return text


@lru_cache(maxsize=16384)
def digits_for_ordinal(word: str) -> str:
    """An ordinal word in digits (text2num): "first" -> "1st"; anything else unchanged."""
    try:
        return alpha2digit(word, "en", threshold=0)
    except Exception:
        return word


@lru_cache(maxsize=16384)
def number_word_value(word: str) -> int | None:
    """The value of a number word or phrase (text2num), or None."""
    try:
        return int(text2num(word.lower(), "en"))
    except Exception:
        return None


# ----------------------------------------------------------------------------------------------- units
@dataclass(frozen=True)
class Unit:
    """A unit as pint knows it: its dimensionality, and value_in_base = value * factor + offset."""

    name: str
    dimension: str
    factor: float
    offset: float


_REGISTRY = None


def _registry():
    global _REGISTRY
    if _REGISTRY is None:
        import pint

        _REGISTRY = pint.UnitRegistry(cache_folder=None)
        # pint warns when a word parses two ways ("mins": minutes or milli-inches); the first way is kept, as in pint
        logging.getLogger("pint.util").addFilter(lambda record: "yield multiple results" not in record.getMessage())
    return _REGISTRY


@lru_cache(maxsize=16384)
def unit(text: str) -> Unit | None:
    """The unit named by ``text`` ("metres", "km²", "°F", "miles per hour"), or None (pint)."""
    text = text.strip().replace("per cent", "percent")
    if not text or not re.search(r"[^\W\d_]|[%°]", text) or text.lower() in {"a", "i"}:
        return None
    if len(text) > 1 and is_function_word(text):  # "in", "at": never units in running text
        return None
    registry = _registry()
    parsed = None
    for candidate in _unit_spellings(text):
        try:
            parsed = registry.parse_units(candidate)
            break
        except Exception:
            continue
    if parsed is None:
        return None
    percent = "%" in text or "percent" in text.lower()
    if parsed == registry.dimensionless and not percent:
        return None
    try:
        zero = registry.Quantity(0.0, parsed).to_base_units().magnitude
        one = registry.Quantity(1.0, parsed).to_base_units().magnitude
        dimension = str(registry.get_dimensionality(parsed))
    except Exception:
        return None
    if percent:
        dimension, one, zero = "percent", 1.0, 0.0
    elif dimension == "dimensionless":
        dimension = str(parsed)  # angles and other ratios compare only with themselves
    return Unit(str(parsed), dimension, float(one - zero), float(zero))


def _unit_spellings(text: str) -> list[str]:
    """Ways pint may know ``text``: as written, lower-cased ("Meter"), with words joined ("degrees Celsius"), with
    "square"/"cubic"/"per" as operators."""
    lower = text.lower()
    words = lower.split()
    if len(words) == 1:
        return [text, lower]
    spelled = []
    if words[0] in {"degree", "degrees"}:
        spelled.append("degree_" + "_".join(words[1:]).capitalize())
    joined = " ".join(words).replace(" per ", " / ")
    for power, word in (("**2", "square "), ("**3", "cubic ")):
        if joined.startswith(word):
            joined = joined[len(word) :] + power
    return [*spelled, joined, "_".join(words)]


def month_number(word: str) -> int | None:
    """1-12 for an English month name or abbreviation (calendar), else None."""
    return _MONTHS.get(word.lower().rstrip("."))


# ----------------------------------------------------------------------------------------------- sentences
_SEGMENTER = None
_MAX_SEGMENTED_CHARS = 4000
_CANDIDATE_BOUNDARY = re.compile(r"[.!?][\"'\u201d)\]]*\s+\S")


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` (pysbd); a text with no inner boundary skips the segmenter, and very long paragraphs
    are cut at plain boundaries first so that the time stays linear in the length."""
    sentences = []
    for block in re.split(r"\s*\n\s*", text):
        if not block.strip():
            continue
        if _CANDIDATE_BOUNDARY.search(block) is None:
            sentences.append(block.strip())
            continue
        for piece in _pieces(block):
            sentences.extend(sentence.strip() for sentence in _segmenter().segment(piece))
    return [sentence for sentence in sentences if re.search(r"\w", sentence)]


def _segmenter():
    global _SEGMENTER
    if _SEGMENTER is None:
        import pysbd

        _SEGMENTER = pysbd.Segmenter(language="en", clean=False)
    return _SEGMENTER


def _pieces(block: str) -> list[str]:
    if len(block) <= _MAX_SEGMENTED_CHARS:
        return [block]
    pieces, start = [], 0
    for match in re.finditer(r"[.!?]\s+(?=[A-Z])", block):
        if match.end() - start >= _MAX_SEGMENTED_CHARS // 2:
            pieces.append(block[start : match.end()])
            start = match.end()
    pieces.append(block[start:])
    return [piece for chunk in pieces for piece in _hard_cut(chunk)]


def _hard_cut(chunk: str) -> list[str]:
    return [chunk[i : i + _MAX_SEGMENTED_CHARS] for i in range(0, len(chunk), _MAX_SEGMENTED_CHARS)] or [chunk]


# ----------------------------------------------------------------------------------------------- language
# A Latin-script text is English when at least this share of its lower-case words are English words (lemminflect
# knows them, or wordfreq has them at ENGLISH_WORD_ZIPF or above); otherwise py3langid names its language.
ENGLISH_WORD_SHARE = 0.5
ENGLISH_WORD_ZIPF = 3.5
_LANGUAGE_IDENTIFIER = None


def _identifier():
    global _LANGUAGE_IDENTIFIER
    if _LANGUAGE_IDENTIFIER is None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        _LANGUAGE_IDENTIFIER = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return _LANGUAGE_IDENTIFIER


@lru_cache(maxsize=131072)
def is_english_word(word: str) -> bool:
    lower = word.lower()
    return bool(lemmas(lower)) or lower in _STOP_WORDS or wordfreq.zipf_frequency(lower, "en") >= ENGLISH_WORD_ZIPF


@lru_cache(maxsize=16384)
def language_of(text: str) -> str:
    """ISO 639-1 code of the language of ``text``: "en" unless its script or its words say otherwise (py3langid
    then names the language; "und" when it cannot)."""
    letters = [char for char in text if char.isalpha()]
    if not letters:
        return "en"
    latin = sum("LATIN" in unicodedata.name(char, "") for char in letters)
    if latin >= 0.5 * len(letters):
        words = re.findall(r"[^\W\d_]+", text)
        lower = [word for word in words if word[0].islower()] or words
        if sum(is_english_word(word) for word in lower) >= ENGLISH_WORD_SHARE * len(lower):
            return "en"
    language, _ = _identifier().classify(text)
    return language if language != "en" else "und"


def same_name(left: str, right: str) -> bool:
    """Two spellings of one name ("Tenzing Norgay" / "Tenzing Norkay"), by rapidfuzz's normalised similarity."""
    if left == right:
        return True
    if min(len(left), len(right)) < 5:
        return False
    return fuzz.ratio(left, right) >= 88.0


__all__ = [
    "Unit",
    "digits_for_number_words",
    "digits_for_ordinal",
    "is_dictionary_word",
    "is_english_word",
    "is_function_word",
    "is_verb",
    "language_of",
    "lemmas",
    "month_number",
    "number_word_value",
    "same_name",
    "split_sentences",
    "unit",
    "word_key",
    "word_weight",
]
