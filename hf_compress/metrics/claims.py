"""Split a generated text into atomic claims: sentences first, then coordinated and inserted clauses.

Pure functions, no model. Example:

```python
>>> from hf_compress.metrics.claims import split_claims
>>> split_claims("Marie Curie, who was born in Warsaw, won two Nobel Prizes. She discovered radium and died in 1934.")
['Marie Curie was born in Warsaw.', 'Marie Curie won two Nobel Prizes.', 'She discovered radium.', 'She died in 1934.']
```
"""

from __future__ import annotations

import re

from hf_compress.metrics import language
from hf_compress.metrics.text_analysis import NEGATION_CUES

_WORD = re.compile(r"[A-Za-z][A-Za-z'\u2019\-]*")
_COORDINATION = re.compile(r",?\s+(?:and|but|while|whereas|yet)\s+|,\s+(?:and then|and also)\s+")
_RELATIVE_INSERT = re.compile(r"^(?P<subject>[^,]+?),\s+(?:who|which)\s+(?P<relative>[^,]+),\s+(?P<rest>.+)$")
_LEADING_ADVERBS = frozenset({"also", "later", "then", "subsequently", "eventually", "soon", "still", "often"})


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` (pysbd, through :func:`hf_compress.metrics.language.split_sentences`)."""
    return language.split_sentences(text)


def split_claims(text: str) -> list[str]:
    """Atomic claims of ``text``: each sentence, split further at ";", at non-restrictive "who/which" inserts and
    at coordinated clauses ("... and died in 1934"); a clause without its own subject borrows the first one's."""
    if not isinstance(text, str):
        raise TypeError(f"split_claims expects a string, got {type(text).__name__}")
    claims = []
    for sentence in split_sentences(text):
        for part in sentence.split(";"):
            for clause in _split_relative_insert(part.strip()):
                claims.extend(_split_coordination(clause))
    return [_finish(claim) for claim in claims if re.search(r"\w", claim)]


def _words(text: str) -> list[re.Match]:
    return list(_WORD.finditer(text))


def _is_verb(word: str) -> bool:
    return language.is_verb(word)


def _first_verb(text: str) -> re.Match | None:
    for match in _words(text):
        if _is_verb(match.group()):
            return match
    return None


def _starts_with_clause(text: str) -> bool:
    """True when a verb comes within the first four words, before any list comma or conjunction."""
    for index, match in enumerate(_words(text)):
        if index >= 4:
            return False
        word = match.group().lower()
        if word in {"and", "or", "but"}:
            return False
        if "," in text[: match.start()]:
            return False
        if _is_verb(word):
            return True
    return False


def _subject_of(clause: str) -> str:
    verb = _first_verb(clause)
    if verb is None:
        return ""
    return clause[: verb.start()].split(",")[-1].strip()


def _starts_with_verb(text: str) -> bool:
    for match in _words(text):
        word = match.group().lower()
        if word in _LEADING_ADVERBS:
            continue
        return _is_verb(word) or word in NEGATION_CUES
    return False


def _split_relative_insert(clause: str) -> list[str]:
    match = _RELATIVE_INSERT.match(clause)
    if match is None or _first_verb(match.group("subject")) is not None:
        return [clause]
    subject = match.group("subject").strip()
    return [f"{subject} {match.group('relative').strip()}", f"{subject} {match.group('rest').strip()}"]


def _split_coordination(clause: str) -> list[str]:
    for match in _COORDINATION.finditer(clause):
        left, right = clause[: match.start()].strip(), clause[match.end() :].strip()
        if _first_verb(left) is None or not _starts_with_clause(right):
            continue
        if _starts_with_verb(right):
            subject = _subject_of(left)
            if subject:
                right = f"{subject} {right}"
        return [left, *_split_coordination(right)]
    return [clause]


def _finish(claim: str) -> str:
    claim = claim.strip().strip(",;:").strip()
    if claim and claim.split()[0].islower():  # "she died" -> "She died", but never "iPhone" -> "IPhone"
        claim = claim[0].upper() + claim[1:]
    return claim if claim[-1:] in {".", "!", "?", "\u3002", "\uff01", "\uff1f"} else claim + "."
