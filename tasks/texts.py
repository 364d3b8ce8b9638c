"""Sentences for the synthetic corpus, from a small seeded grammar.

Every sentence, shared or a speaker's own, comes from the same generator, so the distribution of texts
cannot depend on a speaker's gender, dialect or channel; only the seed differs.
"""
from __future__ import annotations

import numpy as np

_ADJECTIVES = (
    "old", "quiet", "bright", "heavy", "small", "green", "cold", "narrow", "wooden", "little",
    "yellow", "broken", "gentle", "empty", "silver", "early", "distant", "round", "busy", "warm",
)
_NOUNS = (
    "farmer", "river", "window", "garden", "letter", "teacher", "basket", "harbour", "kettle", "market",
    "station", "pencil", "ladder", "blanket", "village", "doctor", "bridge", "candle", "mountain", "boat",
    "engine", "orchard", "painter", "wagon", "shepherd", "lantern", "carpet", "sailor", "meadow", "tower",
)
_VERBS = (
    "carried", "painted", "opened", "followed", "watched", "cleaned", "dropped", "found", "moved", "needed",
    "pushed", "visited", "repaired", "counted", "covered", "passed", "reached", "wanted", "filled", "turned",
)
_PLACES = (
    "near the station", "by the river", "after the storm", "before dinner", "in the morning",
    "on the hill", "across the square", "behind the barn", "at the harbour", "under the bridge",
    "every Sunday", "last winter", "along the road", "inside the hall", "during the fair",
)
_ADVERBS = ("slowly", "again", "carefully", "quickly", "together", "once more", "at last", "quietly")
_NAMES = ("Anna", "Peter", "Maria", "Thomas", "Grace", "Oliver", "Helen", "Samuel", "Ruth", "Daniel")
_NUMBERS = ("two", "three", "four", "five", "seven", "nine", "ten", "twelve")


def _pick(rng: np.random.Generator, words: tuple[str, ...]) -> str:
    return words[int(rng.integers(len(words)))]


def sentence(rng: np.random.Generator) -> str:
    """One sentence of five to fourteen words from one of several templates."""
    template = int(rng.integers(5))
    adj, adj2 = _pick(rng, _ADJECTIVES), _pick(rng, _ADJECTIVES)
    noun, noun2 = _pick(rng, _NOUNS), _pick(rng, _NOUNS)
    verb, place = _pick(rng, _VERBS), _pick(rng, _PLACES)
    if template == 0:
        text = f"The {adj} {noun} {verb} the {adj2} {noun2} {place}"
    elif template == 1:
        text = f"{_pick(rng, _NAMES)} {verb} {_pick(rng, _NUMBERS)} {adj} {noun}s {_pick(rng, _ADVERBS)}"
    elif template == 2:
        text = f"A {noun} {verb} the {noun2} {place}, and the {adj} {_pick(rng, _NOUNS)} {_pick(rng, _VERBS)} it"
    elif template == 3:
        text = f"{place.capitalize()} the {noun} {verb} a {adj} {noun2}"
    else:
        text = f"Did the {adj} {noun} really say that {_pick(rng, _NAMES)} {verb} the {noun2}"
        return text + "?"
    return text[0].upper() + text[1:] + "."


def sentences(rng: np.random.Generator, count: int) -> list[str]:
    """`count` distinct sentences (the grammar has millions, so rejection ends quickly)."""
    chosen: list[str] = []
    seen: set[str] = set()
    while len(chosen) < count:
        text = sentence(rng)
        if text not in seen:
            seen.add(text)
            chosen.append(text)
    return chosen
