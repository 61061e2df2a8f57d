"""Analysis of one claim or fact for the claim logic: content words, quantities and dates, names and polarity.

The word knowledge comes from libraries (see :mod:`hf_compress.metrics.language`: lemminflect, snowballstemmer,
wordfreq, stop-words, text2num, pint, calendar); what is here is how a claim's parts are found and compared. Results
are cached per string, so facts shared by many claims are analysed once.

```python
>>> from hf_compress.metrics.text_analysis import analyse
>>> claim = analyse("Everest is about 8,849 m tall.")
>>> [(q.value, q.dimension, q.hedged) for q in claim.quantities]
[(8849.0, '[length]', True)]
>>> analyse("It is 8849 metres high.").quantities[0].matches(claim.quantities[0])
True
>>> analyse("Der Gipfel ist 8.849 Meter hoch.").quantities[0].matches(claim.quantities[0])  # 8.849 read as 8849 too
True
>>> sorted(claim.keys)
['everest', 'tall']
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import NamedTuple

from hf_compress.metrics import language

_TOKEN = re.compile(
    r"(?P<num>\d{1,3}(?:[,.]\d{3})+(?:[.,]\d+)?|\d+(?:[.,]\d+)?)"
    r"|(?P<word>[^\W\d_][^\W\d_'\u2019]*(?:['\u2019][^\W\d_]+)*['\u2019]?)"
    r"|(?P<sym>\u00b0\s?[CFcf]\b|[%$\u20ac\u00a3\u00a5\u00b2\u00b3/\-\u2013\u2014])"
    r"|(?P<punct>[.,;:!?()\"\u201c\u201d])"
)
# Negation cues and quantity hedges are closed classes of English grammar: part of the claim logic.
NEGATION_CUES = frozenset("not no never none nobody nothing nowhere neither nor without cannot".split())
# "No river is larger than the Amazon" states that the Amazon is the largest: not a negation of the fact.
UNIVERSAL_NEGATIONS = frozenset({"no", "none", "nothing", "nobody", "never"})
COMPARATIVE_MARKERS = frozenset({"than", "before", "other"})
# Opposite directions of comparison and order. Other antonyms need a thesaurus, which no offline package ships.
OPPOSITES = (
    ("more", "less"),
    ("most", "least"),
    ("first", "last"),
    ("earlier", "later"),
)  # before/after: see _check_order
OPPOSITES += (("above", "below"), ("over", "under"), ("increase", "decrease"), ("gain", "lose"), ("win", "lose"))
_NEGATING_PREFIXES = ("un", "in", "im", "il", "ir", "dis", "non")
_CURRENCY_SYMBOLS = frozenset("$\u20ac\u00a3\u00a5")

_CONNECTORS = frozenset({"of", "de", "da", "van", "von", "der", "del", "di", "la", "le", "du", "upon", "al", "bin"})
_HEDGE_PHRASES = (
    ("more", "than"),
    ("less", "than"),
    ("fewer", "than"),
    ("up", "to"),
    ("at", "least"),
    ("at", "most"),
    ("as", "much", "as"),
    ("as", "many", "as"),
    ("just", "over"),
    ("just", "under"),
    ("well", "over"),
)
_HEDGE_WORDS = frozenset(
    "about around roughly approximately nearly almost circa some over under above below exceed exceeds "
    "exceeding estimated approx".split()
)
_HEDGE_LAST_WORDS = _HEDGE_WORDS | {phrase[-1] for phrase in _HEDGE_PHRASES}
_HEDGE_RELATIVE_TOLERANCE = 0.05
_ORDINAL_SUFFIXES = frozenset({"st", "nd", "rd", "th"})


# ----------------------------------------------------------------------------------------------- words
def _strip_possessive(word: str) -> str:
    if "'" not in word and "\u2019" not in word:
        return word
    word = word.replace("\u2019", "'")
    if word.endswith("'s"):
        return word[:-2]
    return word.rstrip("'")


word_key = language.word_key

_ANTONYMS: dict[str, set[str]] = {}
for _left, _right in OPPOSITES:
    _ANTONYMS.setdefault(word_key(_left), set()).add(word_key(_right))
    _ANTONYMS.setdefault(word_key(_right), set()).add(word_key(_left))


@lru_cache(maxsize=65536)
def antonyms_of(key: str) -> frozenset[str]:
    """Keys of the opposite words: the comparison/order pairs above, and a negating prefix ("likely"/"unlikely")."""
    found = set(_ANTONYMS.get(key, ()))
    for prefix in _NEGATING_PREFIXES:
        if key.startswith(prefix) and len(key) - len(prefix) >= 4:
            found.add(key[len(prefix) :])
    return frozenset(found)


def _has_antonyms(key: str) -> bool:
    return key in _ANTONYMS or any(key.startswith(p) and len(key) - len(p) >= 4 for p in _NEGATING_PREFIXES)


def looks_like_verb(word: str) -> bool:
    """Verb forms vary freely between paraphrases ("turned into" / "developed into"), unlike nouns."""
    lower = word.lower()
    return language.is_verb(lower) or lower.endswith(("ed", "ing"))


def _is_function_word(lower: str) -> bool:
    return language.is_function_word(lower)


# ----------------------------------------------------------------------------------------------- data
class Token(NamedTuple):
    kind: str  # "num", "word", "sym" or "punct"
    text: str
    start: int
    end: int
    lower: str
    bare: str  # lower-cased, without a possessive "'s" (words only; else the lower-cased text)


@dataclass(frozen=True)
class Quantity:
    """A number or date found in a text, converted to a base unit so that 8,849 m and 8.849 km compare equal.

    ``dimension`` is pint's dimensionality ("[length]", "[mass]", ...), "date", "ordinal", "percent", a currency, or
    ``None`` for a plain count (then ``nouns`` holds the counted words, e.g. {"sonnet"} for "154 sonnets").
    """

    text: str
    value: float | None
    dimension: str | None
    precision: float = 0.5
    hedged: bool = False
    soft: bool = False
    nouns: frozenset[str] = frozenset()
    year: int | None = None
    month: int | None = None
    day: int | None = None
    decade: bool = False
    alternatives: tuple[float, ...] = ()  # other readings of an ambiguous separator: "8.849" is also 8849

    def comparable(self, other: Quantity) -> bool:
        """Both talk about the same kind of thing (so different values contradict each other)."""
        return self.dimension == other.dimension

    def matches(self, other: Quantity) -> bool:
        """Same value within the precision either side was written with (or 5% when either is hedged)."""
        if not self.comparable(other):
            return False
        if self.dimension == "date":
            return _dates_match(self, other)
        if self.value is None or other.value is None:
            return False
        for left in (self.value, *self.alternatives):
            for right in (other.value, *other.alternatives):
                tolerance = max(self.precision, other.precision) + 1e-9 * max(abs(left), abs(right), 1.0)
                if left != self.value or right != other.value:
                    tolerance = 1e-6 * max(abs(left), abs(right), 1.0)  # another reading matches exactly only
                if self.hedged or other.hedged:
                    tolerance = max(tolerance, _HEDGE_RELATIVE_TOLERANCE * max(abs(left), abs(right)))
                if abs(left - right) <= tolerance:
                    return True
        return False


def _dates_match(left: Quantity, right: Quantity) -> bool:
    if left.year is not None and right.year is not None:
        if left.decade or right.decade:
            if left.year // 10 != right.year // 10:
                return False
        elif left.year != right.year:
            return False
    elif left.year is None and right.year is None and (left.month is None or right.month is None):
        return False
    for part in ("month", "day"):
        a, b = getattr(left, part), getattr(right, part)
        if a is not None and b is not None and a != b:
            return False
    return True


@dataclass(frozen=True)
class Entity:
    """A capitalised name, e.g. "Gustave Eiffel", as lower-cased words (connectors such as "of" dropped)."""

    text: str
    words: tuple[str, ...]
    keys: tuple[str, ...]

    @property
    def initials(self) -> str:
        return "".join(word[0] for word in self.words)


@dataclass(frozen=True)
class ContentWord:
    key: str
    weight: float
    text: str
    in_entity: bool


@dataclass(frozen=True)
class TextAnalysis:
    """Everything the lexical consistency checks need to know about one text."""

    text: str
    content: tuple[ContentWord, ...]
    quantities: tuple[Quantity, ...]
    entities: tuple[Entity, ...]
    negated: bool
    words: frozenset[str] = field(default_factory=frozenset)

    @cached_property
    def negation_cue(self) -> str | None:
        """The first negation word of the text ("never", "not", "isn't"), if any."""
        for word in re.findall(r"[^\W\d_]+(?:['\u2019]t)?", self.text):
            if word.lower() in NEGATION_CUES or word.lower().endswith(("n't", "n\u2019t")):
                return word
        return None

    @cached_property
    def keys(self) -> frozenset[str]:
        return frozenset(word.key for word in self.content)

    @cached_property
    def polarity_keys(self) -> frozenset[str]:
        return frozenset(word.key for word in self.content if _has_antonyms(word.key))

    @cached_property
    def total_weight(self) -> float:
        return sum(word.weight for word in self.content)


# ----------------------------------------------------------------------------------------------- analysis
def tokenize(text: str) -> list[Token]:
    tokens = []
    append = tokens.append
    for match in _TOKEN.finditer(text):
        kind, value = match.lastgroup, match.group()
        lower = value.lower()
        bare = _strip_possessive(lower) if kind == "word" else lower
        start, end = match.span()
        append(Token(kind, value, start, end, lower, bare))
    return tokens


@lru_cache(maxsize=65536)
def analyse(text: str) -> TextAnalysis:
    """Analyse ``text`` (cached). See :class:`TextAnalysis`."""
    text = language.digits_for_number_words(text)
    tokens = tokenize(text)
    consumed: set[int] = set()
    quantities = _extract_quantities(tokens, consumed)
    entities, entity_tokens = _extract_entities(tokens, consumed)
    negated = _is_negated(tokens)
    content = []
    words = set()
    for index, token in enumerate(tokens):
        if token.kind != "word":
            continue
        lower = token.bare
        words.add(lower)
        if index in consumed or _is_function_word(lower) or lower in NEGATION_CUES or lower.endswith("n't"):
            continue
        if len(lower) < 2:
            continue
        key = word_key(lower)
        words.add(key)
        in_entity = index in entity_tokens
        if in_entity and lower in _CONNECTORS:
            continue
        weight = 1.0 if in_entity else language.word_weight(lower)
        content.append(ContentWord(key, weight, token.text, in_entity))
    return TextAnalysis(text, tuple(content), tuple(quantities), tuple(entities), negated, frozenset(words))


def _is_negated(tokens: list[Token]) -> bool:
    cues = [t.lower for t in tokens if t.kind == "word" and (t.lower in NEGATION_CUES or t.lower.endswith("n't"))]
    if not cues:
        return False
    lowers = {t.lower for t in tokens if t.kind == "word"}
    # "No river is larger than the Amazon" states that the Amazon is the largest: not a negation of the fact.
    if all(cue in UNIVERSAL_NEGATIONS for cue in cues) and lowers & COMPARATIVE_MARKERS:
        return False
    return True  # "neither ... nor", "not ... no": negations within one claim rarely cancel out


# ---- entities
def _sentence_initial(tokens: list[Token], index: int) -> bool:
    for previous in range(index - 1, -1, -1):
        kind, text = tokens[previous].kind, tokens[previous].text
        if kind == "punct" and text in {".", "!", "?", ":", '"', "\u201c"}:
            return True
        if kind in {"word", "num"}:
            return False
    return True


def _not_a_name(lower: str) -> bool:
    return _is_function_word(lower) or lower in NEGATION_CUES or lower in _HEDGE_WORDS


def _looks_like_name(token: Token) -> bool:
    """A capitalised sentence-initial word is a name when lemminflect does not know it as an English word."""
    lower = token.bare
    if _not_a_name(lower) or language.number_word_value(lower) is not None:
        return False
    return token.text.isupper() or not language.is_dictionary_word(lower)


def _extract_entities(tokens: list[Token], consumed: set[int]) -> tuple[list[Entity], set[int]]:
    entities, members = [], set()
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token.kind != "word" or not token.text[0].isupper() or index in consumed:
            index += 1
            continue
        run = [index]
        cursor = index + 1
        while cursor < len(tokens):
            current = tokens[cursor]
            if current.kind == "word" and current.text[0].isupper() and cursor not in consumed:
                run.append(cursor)
                cursor += 1
            elif (
                cursor + 1 < len(tokens)
                and ((current.kind == "word" and current.lower in _CONNECTORS) or current.text == "-")
                and (tokens[cursor + 1].kind == "word" or tokens[cursor + 1].text == "-")
                and (tokens[cursor + 1].text[0].isupper() or current.text == "-" or tokens[cursor + 1].text == "-")
            ):
                cursor += 1
            else:
                break
        index = cursor
        # a capitalised first word of a sentence is a name only when it does not look like an ordinary word
        if _sentence_initial(tokens, run[0]):
            lower = tokens[run[0]].lower
            if _not_a_name(lower):
                run = run[1:]
            elif len(run) == 1 and not _looks_like_name(tokens[run[0]]):
                run = []
        if not run:
            continue
        span = range(run[0], run[-1] + 1)
        words = tuple(tokens[i].bare for i in span if tokens[i].kind == "word" and tokens[i].lower not in _CONNECTORS)
        if not words:
            continue
        members.update(i for i in span if tokens[i].kind == "word")
        text = " ".join(tokens[i].text for i in span if tokens[i].kind == "word")
        entities.append(Entity(text, words, tuple(word_key(word) for word in words)))
    return entities, members


# ---- quantities
def _number_value(text: str) -> tuple[float, float, tuple[float, ...]]:
    """(value, half of the last written digit's place, other readings) of a written number.

    "8,849" -> (8849, 0.5, (8.849,)) and "8.849" -> (8.849, 0.0005, (8849,)): one separator before exactly three
    digits is a thousands separator in English and a decimal mark in German, French and others (or the reverse), so
    both readings are kept. "8.8" -> (8.8, 0.05, ()); "1.234.567" and "1.234,5" follow the continental convention.
    """
    commas, dots = text.count(","), text.count(".")
    if dots > 1 or (dots and commas and text.rindex(",") > text.rindex(".")):
        plain = text.replace(".", "").replace(",", ".")  # 1.234.567 or 1.234,5
    else:
        plain = text.replace(",", "")
    decimals = len(plain.split(".")[1]) if "." in plain else 0
    value, precision = float(plain), 0.5 * 10.0 ** (-decimals)
    alternatives: tuple[float, ...] = ()
    if commas + dots == 1 and re.fullmatch(r"\d{1,3}[.,]\d{3}", text):
        other = text.replace(",", "") if dots else text.replace(",", ".")
        alternatives = (float(other.replace(".", "")) if dots else float(other),)
    return value, precision, alternatives


def _word_at(tokens: list[Token], index: int) -> str:
    if 0 <= index < len(tokens) and tokens[index].kind == "word":
        return tokens[index].bare
    return ""


def _attached(tokens: list[Token], index: int) -> bool:
    """Token ``index`` follows the previous one without a space ("1960s", "12th", "km²")."""
    return 0 < index < len(tokens) and tokens[index].start == tokens[index - 1].end


def _hedge_before(tokens: list[Token], index: int, consumed: set[int]) -> bool:
    if index > 0 and tokens[index - 1].kind == "sym" and tokens[index - 1].text in "$\u20ac\u00a3":
        index -= 1
    previous = _word_at(tokens, index - 1)
    if previous not in _HEDGE_LAST_WORDS:
        return False
    for phrase in _HEDGE_PHRASES:
        if phrase[-1] != previous:
            continue
        start = index - len(phrase)
        if start >= 0 and tuple(_word_at(tokens, i) for i in range(start, index)) == phrase:
            consumed.update(range(start, index))
            return True
    if previous in _HEDGE_WORDS:
        consumed.add(index - 1)
        return True
    return False


_MULTI_WORD_UNIT = re.compile(r"\b(?:per|square|cubic|degrees?)\b|[/\u00b2\u00b3\u00b0]")


def _unit_after(tokens: list[Token], index: int) -> tuple[language.Unit | None, int]:
    """The unit that starts at ``index`` (skipping a hyphen, as in "8-ounce"), and the index after it (pint). A unit
    of several tokens needs an operator word or sign ("miles per hour", "square km", "km²", "km/h", "° C")."""
    if index < len(tokens) and tokens[index].text == "-":
        index += 1
    for length in (3, 2, 1):
        parts = tokens[index : index + length]
        if len(parts) < length or any(part.kind in {"num", "punct"} for part in parts):
            continue
        if any(part.kind == "word" and _is_function_word(part.lower) and part.lower != "per" for part in parts[1:]):
            continue
        if length > 1 and all(part.kind == "sym" for part in parts[1:]) and parts[0].kind == "word":
            candidate = "".join(part.text for part in parts)
        else:
            candidate = " ".join(part.text for part in parts)
            if length > 1 and not _MULTI_WORD_UNIT.search(candidate.lower()):
                continue
        unit = language.unit(candidate.replace("\u00b0 ", "\u00b0").replace(" / ", "/"))
        if unit is not None:
            return unit, index + length
    return None, index


def _counted_nouns(tokens: list[Token], index: int) -> frozenset[str]:
    nouns = []
    while index < len(tokens) and len(nouns) < 2:
        token = tokens[index]
        if token.kind == "sym" and token.text == "-":
            index += 1
            continue
        if token.kind != "word" or _is_function_word(token.lower) or token.lower in NEGATION_CUES:
            break
        nouns.append(word_key(token.lower))
        index += 1
    return frozenset(nouns)


_SCALES = frozenset({1000, 10**6, 10**9, 10**12})


def _scale_after(tokens: list[Token], index: int) -> tuple[float, int]:
    if index < len(tokens) and tokens[index].kind == "num" and tokens[index].text.isdigit():
        scale = int(tokens[index].text)  # text2num writes "1.81 million" as "1.81 1000000"
    else:
        scale = language.number_word_value(_word_at(tokens, index)) if _word_at(tokens, index) else None
    return (float(scale), index + 1) if scale in _SCALES else (1.0, index)


def _with_unit(
    text: str,
    value: float,
    precision: float,
    hedged: bool,
    tokens: list[Token],
    after: int,
    consumed: set[int],
    alternatives: tuple[float, ...] = (),
) -> Quantity:
    unit, end = _unit_after(tokens, after)
    if unit is not None:
        consumed.update(range(after, end))
        text = f"{text} {_span(tokens, after, end)}".replace(" - ", "-").replace(" \u00b2", "\u00b2")
        converted = tuple(other * unit.factor + unit.offset for other in alternatives)
        return Quantity(
            text,
            value * unit.factor + unit.offset,
            unit.dimension,
            precision * unit.factor,
            hedged,
            alternatives=converted,
        )
    nouns = _counted_nouns(tokens, after)
    return Quantity(text, value, None, precision, hedged, nouns=nouns, alternatives=alternatives)


def _month_at(tokens: list[Token], index: int) -> int | None:
    token = tokens[index] if 0 <= index < len(tokens) else None
    if token is None or token.kind != "word" or not token.text[0].isupper():
        return None
    return language.month_number(token.lower)


def _int_at(tokens: list[Token], index: int, low: int, high: int) -> int | None:
    if 0 <= index < len(tokens) and tokens[index].kind == "num" and re.fullmatch(r"\d+", tokens[index].text):
        value = int(tokens[index].text)
        if low <= value <= high:
            return value
    return None


def _date_at(tokens: list[Token], index: int, consumed: set[int]) -> Quantity | None:
    """Dates written as "29 May 1953", "May 29, 1953", "May 1953", "1953-05-29", "1960s", "3000 BC" or a year."""
    day = _int_at(tokens, index, 1, 31)
    month = _month_at(tokens, index + 1)
    if day is not None and month is not None:
        year = _int_at(tokens, index + 2, 1, 2999)
        end = index + 3 if year is not None else index + 2
        consumed.update(range(index, end))
        return Quantity(_span(tokens, index, end), year, "date", year=year, month=month, day=day)
    year = _int_at(tokens, index, 1000, 2999)
    if year is not None and "," not in tokens[index].text:
        if _word_at(tokens, index + 1) == "s" and _attached(tokens, index + 1):
            consumed.update({index, index + 1})
            return Quantity(_span(tokens, index, index + 2), year, "date", year=year, decade=True)
        if (
            tokens[index + 1 : index + 2]
            and tokens[index + 1].text == "-"
            and _attached(tokens, index + 1)
            and _int_at(tokens, index + 2, 1, 12) is not None
            and _int_at(tokens, index + 4, 1, 31) is not None
        ):
            consumed.update(range(index, index + 5))
            month, day = _int_at(tokens, index + 2, 1, 12), _int_at(tokens, index + 4, 1, 31)
            return Quantity(_span(tokens, index, index + 5), year, "date", year=year, month=month, day=day)
        unit, _ = _unit_after(tokens, index + 1)
        scale, _ = _scale_after(tokens, index + 1)
        if unit is None and scale == 1.0 and year <= 2100:
            consumed.add(index)
            return Quantity(tokens[index].text, year, "date", year=year)
    era_year = _int_at(tokens, index, 1, 20000)
    era = _word_at(tokens, index + 1)
    if era_year is not None and era in {"bc", "bce", "ad", "ce"}:
        consumed.update({index, index + 1})
        signed = -era_year if era in {"bc", "bce"} else era_year
        return Quantity(_span(tokens, index, index + 2), signed, "date", year=signed)
    return None


def _span(tokens: list[Token], start: int, end: int) -> str:
    return " ".join(token.text for token in tokens[start:end])


def _number_words_at(tokens: list[Token], index: int) -> tuple[float, int] | None:
    """The value of a run of number words left as words by text2num ("two", "one"), and the index after it."""
    cursor = index
    while cursor < len(tokens) and tokens[cursor].kind == "word" and _number_word(tokens[cursor].bare) is not None:
        cursor += 1
        if cursor + 1 < len(tokens) and tokens[cursor].text == "-" and tokens[cursor + 1].kind == "word":
            cursor += 1
    while cursor > index:
        value = language.number_word_value(_span(tokens, index, cursor).replace(" - ", "-"))
        if value is not None:
            return float(value), cursor
        cursor -= 1
    return None


@lru_cache(maxsize=16384)
def _number_word(word: str) -> int | None:
    if _is_function_word(word) and word not in {"one", "two"}:
        return None
    return language.number_word_value(word)


@lru_cache(maxsize=16384)
def _ordinal_word(word: str) -> int | None:
    """1 for "first", 2 for "second" (text2num's ordinals, which it leaves as words below "third" in running text)."""
    written = language.digits_for_ordinal(word)
    match = re.fullmatch(r"(\d+)(?:st|nd|rd|th)", written)
    return int(match.group(1)) if match else None


def _extract_quantities(tokens: list[Token], consumed: set[int]) -> list[Quantity]:
    quantities = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if index in consumed:
            index += 1
            continue
        found = None
        if token.kind == "num":
            found, index = _number_led(tokens, index, consumed)
        elif token.kind == "word":
            found, index = _word_led(tokens, index, consumed)
        else:
            index += 1
        if found is not None:
            quantities.append(found)
    return quantities


def _number_led(tokens: list[Token], index: int, consumed: set[int]) -> tuple[Quantity | None, int]:
    date = _date_at(tokens, index, consumed)
    if date is not None:
        return date, max(i for i in consumed if i >= index) + 1
    token = tokens[index]
    hedged = _hedge_before(tokens, index, consumed)
    value, precision, alternatives = _number_value(token.text)
    consumed.add(index)
    suffix = _word_at(tokens, index + 1)
    if suffix in _ORDINAL_SUFFIXES and _attached(tokens, index + 1):
        consumed.add(index + 1)
        nouns = _counted_nouns(tokens, index + 2)
        return Quantity(token.text + suffix, value, "ordinal", 0.5, nouns=nouns), index + 2
    currency = None
    if index > 0 and tokens[index - 1].kind == "sym" and tokens[index - 1].text in _CURRENCY_SYMBOLS:
        currency = f"currency {tokens[index - 1].text}"
        consumed.add(index - 1)
    scale, after = _scale_after(tokens, index + 1)
    consumed.update(range(index + 1, after))
    value, precision = value * scale, precision * scale
    alternatives = tuple(other * scale for other in alternatives)
    if currency is not None:
        text = _span(tokens, index - 1, after)
        return Quantity(text, value, currency, precision, hedged, alternatives=alternatives), after
    quantity = _with_unit(_span(tokens, index, after), value, precision, hedged, tokens, after, consumed, alternatives)
    return quantity, after


def _word_led(tokens: list[Token], index: int, consumed: set[int]) -> tuple[Quantity | None, int]:
    token = tokens[index]
    word = token.bare
    month = _month_at(tokens, index)
    if month is None and _is_function_word(word) and word not in {"one", "two"}:
        return None, index + 1
    if month is not None:
        day = _int_at(tokens, index + 1, 1, 31)
        if day is not None:
            comma = 1 if index + 2 < len(tokens) and tokens[index + 2].text == "," else 0
            year = _int_at(tokens, index + 2 + comma, 1000, 2999)
            end = index + 3 + comma if year is not None else index + 2
            consumed.update(range(index, end))
            return Quantity(_span(tokens, index, end), year, "date", year=year, month=month, day=day), end
        year = _int_at(tokens, index + 1, 1000, 2999)
        if year is not None:
            consumed.update({index, index + 1})
            return Quantity(_span(tokens, index, index + 2), year, "date", year=year, month=month), index + 2
    ordinal = _ordinal_word(word)
    if ordinal is not None and _word_at(tokens, index - 1) not in {"per", "a", "every", "each"}:
        consumed.add(index)
        nouns = _counted_nouns(tokens, index + 1)
        return Quantity(token.text, float(ordinal), "ordinal", 0.5, nouns=nouns), index + 1
    number = _number_words_at(tokens, index)
    if number is not None:
        value, after = number
        hedged = _hedge_before(tokens, index, consumed)
        soft = after == index + 1 and word == "one"  # "one of the largest": rarely a count
        scale, after_scale = _scale_after(tokens, after)
        consumed.update(range(index, after_scale))
        quantity = _with_unit(
            _span(tokens, index, after_scale), value * scale, 0.5 * scale, hedged, tokens, after_scale, consumed
        )
        if soft:
            quantity = Quantity(
                quantity.text, quantity.value, quantity.dimension, quantity.precision, hedged, True, quantity.nouns
            )
        return quantity, after_scale
    return None, index + 1
