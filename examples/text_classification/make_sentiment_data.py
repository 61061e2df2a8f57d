"""Write a small sentiment data set (JSON lines with "text" and "label") made from templates: no downloads.

python examples/text_classification/make_sentiment_data.py --out /tmp/sentiment
"""

from __future__ import annotations

import argparse
import json
import os
import random

SUBJECTS = [
    "the film",
    "this phone",
    "the hotel",
    "our dinner",
    "the concert",
    "that book",
    "the service",
    "the app",
    "the course",
    "my new laptop",
    "the museum",
    "the flight",
    "this game",
    "the coffee",
    "the update",
]
POSITIVE = [
    "wonderful",
    "excellent",
    "delightful",
    "superb",
    "brilliant",
    "fantastic",
    "pleasant",
    "great",
    "impressive",
    "charming",
    "reliable",
    "lovely",
]
NEGATIVE = [
    "terrible",
    "awful",
    "disappointing",
    "dreadful",
    "poor",
    "boring",
    "frustrating",
    "bad",
    "unpleasant",
    "broken",
    "mediocre",
    "annoying",
]
FRAMES = [
    "{s} was {a}.",
    "Honestly, {s} felt {a}.",
    "I thought {s} was {a} overall.",
    "{s} turned out {a}!",
    "Everyone agreed that {s} was {a}.",
    "Sadly or not, {s} was {a}.",
    "In short: {s}, {a}.",
]
NEGATED = ["{s} was not {a}.", "I would not call {s} {a}."]


def make_examples(count: int, rng: random.Random) -> list[dict]:
    examples = []
    for _ in range(count):
        label = rng.randint(0, 1)
        adjective = rng.choice(POSITIVE if label == 1 else NEGATIVE)
        frame = rng.choice(FRAMES)
        if rng.random() < 0.15:  # a negated opposite adjective keeps the label
            adjective = rng.choice(NEGATIVE if label == 1 else POSITIVE)
            frame = rng.choice(NEGATED)
        text = frame.format(s=rng.choice(SUBJECTS), a=adjective)
        examples.append({"text": text[0].upper() + text[1:], "label": label})
    return examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--train_size", type=int, default=800)
    parser.add_argument("--validation_size", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    os.makedirs(args.out, exist_ok=True)
    for split, size in (("train", args.train_size), ("validation", args.validation_size)):
        with open(os.path.join(args.out, f"{split}.jsonl"), "w") as handle:
            for example in make_examples(size, rng):
                handle.write(json.dumps(example) + "\n")
    print(f"wrote {args.out}/train.jsonl and {args.out}/validation.jsonl")


if __name__ == "__main__":
    main()
