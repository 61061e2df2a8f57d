"""Lexical analysis of one claim or fact: content words, quantities and dates, named entities and polarity.

Pure functions with no model; results are cached per string, so facts shared by many claims are analysed once.

```python
>>> from hf_compress.metrics.text_analysis import analyse
>>> claim = analyse("Everest is about 8,849 m tall.")
>>> [(q.value, q.dimension, q.hedged) for q in claim.quantities]
[(8849.0, 'length', True)]
>>> analyse("It is 8849 metres high.").quantities[0].matches(claim.quantities[0])
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

from hf_compress.metrics import lexicon

_TOKEN = re.compile(
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
    r"|(?P<word>[A-Za-z][A-Za-z'\u2019]*)"
    r"|(?P<sym>\u00b0\s?[CFcf]\b|[%$\u20ac\u00a3\u00b2\u00b3/\-\u2013\u2014])"
    r"|(?P<punct>[.,;:!?()\"\u201c\u201d])"
)
_PHRASES = (
    (re.compile(r"\b(?:went|go|goes|going|gone) (?:live|online)\b", re.I), "launched"),
    (re.compile(r"\b(?:came|come|comes) out\b", re.I), "released"),
    (re.compile(r"\bset foot on\b", re.I), "walked on"),
    (re.compile(r"\bpass(?:ed|es)? away\b", re.I), "died"),
    (re.compile(r"\bmade up of\b", re.I), "consisting of"),
    (re.compile(r"\b(?:split|broke|break|breaks) up\b", re.I), "disbanded"),
    (re.compile(r"\bset up\b", re.I), "founded"),
    (re.compile(r"\bat the same time\b|\bat once\b|\bsimultaneously\b", re.I), "simultaneously"),
    (re.compile(r"\bis home to\b", re.I), "contains"),
    (re.compile(r"\bthe rest of\b", re.I), "remaining"),
)
_PHRASE_ANY = re.compile("|".join(f"(?:{pattern.pattern})" for pattern, _ in _PHRASES), re.I)


def _rewrite_phrases(text: str) -> str:
    if _PHRASE_ANY.search(text) is None:
        return text
    for pattern, replacement in _PHRASES:
        text = pattern.sub(replacement, text)
    return text


_CONNECTORS = frozenset({"of", "de", "da", "van", "von", "der", "del", "di", "la", "le", "du", "upon", "al", "bin"})
_COMMON_SUFFIXES = ("s", "ed", "ing", "ly", "tion", "ment", "ness", "ity", "er", "al", "ic", "ous", "ive", "ful")
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
def stem(word: str) -> str:
    """A light, deterministic suffix stripper (plural, -ing, -ed, final -e); only consistency matters."""
    if len(word) <= 3:
        return word
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith(("sses", "ches", "shes", "xes", "zes")):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    if word.endswith("ing") and len(word) >= 6:
        word = _undouble(word[:-3])
    elif word.endswith("ed") and len(word) >= 5:
        word = _undouble(word[:-2])
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    return word


def _undouble(word: str) -> str:
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":
        return word[:-1]
    return word


def _strip_possessive(word: str) -> str:
    if "'" not in word and "\u2019" not in word:
        return word
    word = word.replace("\u2019", "'")
    if word.endswith("'s"):
        return word[:-2]
    return word.rstrip("'")


@lru_cache(maxsize=65536)
def base_form(word: str) -> str:
    """Lower-cased, possessive-free, lemmatised and stemmed form, before synonym grouping."""
    lower = _strip_possessive(word.lower())
    return stem(lexicon.LEMMAS.get(lower, lower))


def _build_synonyms() -> dict[str, str]:
    table: dict[str, str] = {}
    for group in lexicon.SYNONYM_GROUPS:
        head = base_form(group[0])
        for member in group:
            table.setdefault(base_form(member), head)
    return table


_SYNONYMS = _build_synonyms()


@lru_cache(maxsize=65536)
def word_key(word: str) -> str:
    """The key two words share when they mean the same for matching: "constructed" and "built" -> "build"."""
    base = base_form(word)
    return _SYNONYMS.get(base, base)


_ANTONYMS: dict[str, set[str]] = {}
for _left, _right in lexicon.ANTONYM_PAIRS:
    _ANTONYMS.setdefault(word_key(_left), set()).add(word_key(_right))
    _ANTONYMS.setdefault(word_key(_right), set()).add(word_key(_left))
_LIGHT = frozenset(base_form(word) for word in lexicon.LIGHT_WORDS)
_STOP_KEYS = lexicon.STOPWORDS | lexicon.PRONOUNS
# Capitalised at the start of a sentence, these are ordinary words, never names.
_NOT_NAMES = _STOP_KEYS | lexicon.NEGATION_CUES | lexicon.LIGHT_WORDS | _HEDGE_WORDS | {"first", "more", "most"}


def antonyms_of(key: str) -> set[str]:
    return _ANTONYMS.get(key, set())


def looks_like_verb(word: str) -> bool:
    """Verb forms vary freely between paraphrases ("turned into" / "developed into"), unlike nouns."""
    lower = word.lower()
    return lower in lexicon.VERB_FORMS or lower.endswith(("ed", "ing"))


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

    ``dimension`` is a physical dimension ("length", "mass", ...), "date", "ordinal", "percent", a currency, or
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
        tolerance = max(self.precision, other.precision) + 1e-9 * max(abs(self.value), abs(other.value), 1.0)
        if self.hedged or other.hedged:
            tolerance = max(tolerance, _HEDGE_RELATIVE_TOLERANCE * max(abs(self.value), abs(other.value)))
        return abs(self.value - other.value) <= tolerance


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
    def keys(self) -> frozenset[str]:
        return frozenset(word.key for word in self.content)

    @cached_property
    def polarity_keys(self) -> frozenset[str]:
        return frozenset(word.key for word in self.content if word.key in _ANTONYMS)

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
    text = _rewrite_phrases(text)
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
        if index in consumed or lower in _STOP_KEYS or lower in lexicon.NEGATION_CUES or lower.endswith("n't"):
            continue
        if len(lower) < 2:
            continue
        base = base_form(lower)
        key = _SYNONYMS.get(base, base)
        words.add(key)
        in_entity = index in entity_tokens
        if in_entity and lower in _CONNECTORS:
            continue
        weight = 0.3 if base in _LIGHT and not in_entity else 1.0
        content.append(ContentWord(key, weight, token.text, in_entity))
    return TextAnalysis(text, tuple(content), tuple(quantities), tuple(entities), negated, frozenset(words))


def _is_negated(tokens: list[Token]) -> bool:
    cues = [
        t.lower for t in tokens if t.kind == "word" and (t.lower in lexicon.NEGATION_CUES or t.lower.endswith("n't"))
    ]
    if not cues:
        return False
    lowers = {t.lower for t in tokens if t.kind == "word"}
    # "No river is larger than the Amazon" states that the Amazon is the largest: not a negation of the fact.
    if all(cue in lexicon.UNIVERSAL_NEGATIONS for cue in cues) and lowers & lexicon.COMPARATIVE_MARKERS:
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


def _looks_like_name(token: Token) -> bool:
    lower = token.bare
    if lower in _NOT_NAMES or lower in lexicon.NUMBER_WORDS:
        return False
    return token.text.isupper() or not lower.endswith(_COMMON_SUFFIXES)


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
            if lower in _NOT_NAMES:
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
def _number_value(text: str) -> tuple[float, float]:
    """(value, half of the last written digit's place) for "8,849" -> (8849, 0.5) and "8.8" -> (8.8, 0.05)."""
    plain = text.replace(",", "")
    decimals = len(plain.split(".")[1]) if "." in plain else 0
    return float(plain), 0.5 * 10.0 ** (-decimals)


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


def _unit_after(tokens: list[Token], index: int) -> tuple[tuple[str, float, str] | None, int]:
    """The unit that starts at ``index`` (skipping a hyphen, as in "8-ounce"), and the index after it."""
    if index < len(tokens) and tokens[index].text == "-":
        index += 1
    for length in (3, 2, 1):
        parts = tokens[index : index + length]
        if len(parts) < length or any(part.kind in {"num", "punct"} for part in parts):
            continue
        words = [part.lower for part in parts]
        if length > 1 and all(part.kind == "sym" for part in parts[1:]) and parts[0].kind == "word":
            candidates = ["".join(words)]
        else:
            candidates = [" ".join(words), " ".join(_singular(word) for word in words)]
            if "/" in words:
                candidates.append("".join(words))
        for candidate in candidates:
            unit = lexicon.UNITS.get(candidate.replace("\u00b0 ", "\u00b0"))
            if unit is not None:
                return unit, index + length
    return None, index


def _singular(word: str) -> str:
    if word == "feet":
        return "foot"
    if word.endswith("ches") or word.endswith("shes"):
        return word[:-2]
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith("s") and len(word) > 2 and not word.endswith(("ss", "us")):
        return word[:-1]
    return word


def _counted_nouns(tokens: list[Token], index: int) -> frozenset[str]:
    nouns = []
    while index < len(tokens) and len(nouns) < 2:
        token = tokens[index]
        if token.kind == "sym" and token.text == "-":
            index += 1
            continue
        if token.kind != "word" or token.lower in _STOP_KEYS or token.lower in lexicon.NEGATION_CUES:
            break
        nouns.append(word_key(token.lower))
        index += 1
    return frozenset(nouns)


def _scale_after(tokens: list[Token], index: int) -> tuple[float, int]:
    scale = lexicon.SCALE_WORDS.get(_word_at(tokens, index))
    return (scale, index + 1) if scale else (1.0, index)


def _with_unit(
    text: str, value: float, precision: float, hedged: bool, tokens: list[Token], after: int, consumed: set[int]
) -> Quantity:
    unit, end = _unit_after(tokens, after)
    if unit is not None:
        dimension, factor, symbol = unit
        consumed.update(range(after, end))
        offset = lexicon.UNIT_OFFSETS.get(symbol, 0.0)
        text = f"{text} {_span(tokens, after, end)}".replace(" - ", "-").replace(" \u00b2", "\u00b2")
        return Quantity(text, value * factor + offset, dimension, precision * factor, hedged)
    return Quantity(text, value, None, precision, hedged, nouns=_counted_nouns(tokens, after))


def _month_at(tokens: list[Token], index: int) -> int | None:
    token = tokens[index] if 0 <= index < len(tokens) else None
    if token is None or token.kind != "word" or not token.text[0].isupper():
        return None
    return lexicon.MONTHS.get(token.lower.rstrip("."))


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
    """The value of a run of number words such as "twenty-one" or "two hundred", and the index after it."""
    current, cursor, seen = 0.0, index, False
    while cursor < len(tokens):
        word = _word_at(tokens, cursor)
        if word in lexicon.NUMBER_WORDS:
            value = lexicon.NUMBER_WORDS[word]
            if value == 100 and seen:
                current *= 100
            else:
                current += value
            seen = True
            cursor += 1
        elif seen and tokens[cursor].text == "-" and _word_at(tokens, cursor + 1) in lexicon.NUMBER_WORDS:
            cursor += 1
        else:
            break
    if not seen:
        return None
    return current, cursor


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
    value, precision = _number_value(token.text)
    consumed.add(index)
    suffix = _word_at(tokens, index + 1)
    if suffix in _ORDINAL_SUFFIXES and _attached(tokens, index + 1):
        consumed.add(index + 1)
        nouns = _counted_nouns(tokens, index + 2)
        return Quantity(token.text + suffix, value, "ordinal", 0.5, nouns=nouns), index + 2
    currency = None
    if index > 0 and tokens[index - 1].kind == "sym" and tokens[index - 1].text in "$\u20ac\u00a3":
        currency = lexicon.UNITS[tokens[index - 1].text]
        consumed.add(index - 1)
    scale, after = _scale_after(tokens, index + 1)
    consumed.update(range(index + 1, after))
    value, precision = value * scale, precision * scale
    if currency is not None:
        dimension, factor, _ = currency
        return Quantity(_span(tokens, index - 1, after), value * factor, dimension, precision * factor, hedged), after
    quantity = _with_unit(_span(tokens, index, after), value, precision, hedged, tokens, after, consumed)
    return quantity, after


_QUANTITY_WORDS = frozenset(
    set(lexicon.MONTHS)
    | set(lexicon.ORDINAL_WORDS)
    | set(lexicon.FRACTION_WORDS)
    | set(lexicon.SOFT_NUMBER_VALUES)
    | set(lexicon.NUMBER_WORDS)
)


def _word_led(tokens: list[Token], index: int, consumed: set[int]) -> tuple[Quantity | None, int]:
    token = tokens[index]
    word = token.bare
    if word not in _QUANTITY_WORDS:
        return None, index + 1
    month = _month_at(tokens, index)
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
    if word in lexicon.ORDINAL_WORDS and _word_at(tokens, index - 1) not in {"per", "a", "every", "each"}:
        consumed.add(index)
        nouns = _counted_nouns(tokens, index + 1)
        return Quantity(token.text, float(lexicon.ORDINAL_WORDS[word]), "ordinal", 0.5, nouns=nouns), index + 1
    if word in lexicon.FRACTION_WORDS and _word_at(tokens, index + 1) == "of":
        hedged = _hedge_before(tokens, index - 1 if _word_at(tokens, index - 1) == "a" else index, consumed)
        consumed.add(index)
        return Quantity(token.text, lexicon.FRACTION_WORDS[word], "percent", 0.5, hedged), index + 1
    if word in lexicon.SOFT_NUMBER_VALUES:
        consumed.add(index)
        value = float(lexicon.SOFT_NUMBER_VALUES[word])
        return Quantity(token.text, value, None, 0.5, soft=True, nouns=_counted_nouns(tokens, index + 1)), index + 1
    number = _number_words_at(tokens, index)
    if number is not None:
        value, after = number
        hedged = _hedge_before(tokens, index, consumed)
        soft = after == index + 1 and word in lexicon.SOFT_NUMBER_WORDS
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
