"""A synthetic world of countries and their attributes: a training corpus whose facts can be checked.

Every fact is stated in several phrasings. Training text uses some phrasings; evaluation text uses held-out
phrasings of the same facts, and fact prompts ask the model to complete one attribute at a time.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "st", "tr", "vel"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]
_CODAS = ["", "n", "r", "s", "l", "th", "m"]
_LANGUAGE_SUFFIX = ["ic", "ish", "ese", "ian"]

# (attribute, training phrasings, held-out phrasing, prompt). Braces: {country}, {value}.
TEMPLATES = {
    "capital": (
        [
            "The capital of {country} is {value} .",
            "{value} is the capital of {country} .",
            "In {country} , the capital city is {value} .",
        ],
        "The capital city of {country} is {value} .",
        "The capital of {country} is",
    ),
    "founded": (
        [
            "{country} was founded in {value} .",
            "The founding year of {country} is {value} .",
            "In {value} , {country} was founded .",
        ],
        "{country} was established in {value} .",
        "{country} was founded in",
    ),
    "population": (
        [
            "The population of {country} is {value} million .",
            "{country} has {value} million people .",
            "About {value} million people live in {country} .",
        ],
        "{country} is home to {value} million people .",
        "The population of {country} is",
    ),
    "language": (
        [
            "People in {country} speak {value} .",
            "The language of {country} is {value} .",
            "In {country} , people speak {value} .",
        ],
        "The main language of {country} is {value} .",
        "The language of {country} is",
    ),
    "river": (
        [
            "The longest river in {country} is the {value} .",
            "The {value} is the longest river in {country} .",
            "The river {value} flows through {country} .",
        ],
        "The {value} is the main river of {country} .",
        "The longest river in {country} is the",
    ),
}


@dataclass
class Country:
    name: str
    capital: str
    founded: int
    population: int
    language: str
    river: str

    def value(self, attribute: str) -> str:
        return str(getattr(self, attribute))

    def facts(self) -> list[str]:
        """Reference facts, one per attribute, in the first training phrasing."""
        return [
            TEMPLATES[a][0][0].format(country=self.name, value=self.value(a)).replace(" .", ".") for a in TEMPLATES
        ]


def _name(rng: random.Random, syllables: int) -> str:
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)]
    return ("".join(parts) + rng.choice(_CODAS)).capitalize()


def build_world(num_countries: int = 40, seed: int = 0) -> list[Country]:
    rng = random.Random(seed)
    used: set[str] = set()

    def unique(syllables: int) -> str:
        while True:
            candidate = _name(rng, syllables)
            if candidate not in used and len(candidate) > 3:
                used.add(candidate)
                return candidate

    countries = []
    for _ in range(num_countries):
        name = unique(3)
        countries.append(
            Country(
                name=name,
                capital=unique(2),
                founded=rng.randint(1200, 1950),
                population=rng.randint(2, 90),
                language=name[:-1] + rng.choice(_LANGUAGE_SUFFIX)
                if name[-1] in "aeiou"
                else name + rng.choice(_LANGUAGE_SUFFIX),
                river=unique(2),
            )
        )
    return countries


def training_sentences(world: list[Country], seed: int = 0) -> list[str]:
    """Every fact in every training phrasing, shuffled, as whitespace-tokenised sentences."""
    rng = random.Random(seed)
    sentences = [
        phrasing.format(country=c.name, value=c.value(attribute))
        for c in world
        for attribute, (phrasings, _, _) in TEMPLATES.items()
        for phrasing in phrasings
    ]
    rng.shuffle(sentences)
    return sentences


def heldout_sentences(world: list[Country]) -> list[str]:
    """Every fact in its held-out phrasing (evaluation perplexity)."""
    return [
        heldout.format(country=c.name, value=c.value(a)) for c in world for a, (_, heldout, _) in TEMPLATES.items()
    ]


def fact_prompts(world: list[Country]) -> tuple[list[str], list[list[str]], list[str]]:
    """``(prompts, references, answers)``: one prompt per (country, attribute), the country's facts as references."""
    prompts, references, answers = [], [], []
    for c in world:
        for attribute, (_, _, prompt) in TEMPLATES.items():
            prompts.append(prompt.format(country=c.name))
            references.append(c.facts())
            answers.append(c.value(attribute))
    return prompts, references, answers
