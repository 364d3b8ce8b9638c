"""Word error rate of transcripts over a corpus, with a text normaliser for English ASR scoring.

Public API
----------
- :func:`word_error_rate` - corpus WER with its substitution, deletion, insertion and hit counts.
- :func:`normalise_text` - the normaliser it applies by default (lower case, punctuation out, digits kept).
- :class:`WordErrors` - the frozen result.

Why corpus-level: WER is the sum of errors over all utterances divided by the total number of reference
words (what jiwer, sclite and published ASR numbers report). The mean of per-utterance WERs weights a
two-word utterance as much as a forty-word one and is not comparable with those numbers.

Why a normaliser: an intervention that changes "Hello, world." into "hello world" has not made the
recogniser worse, and raw string comparison would say it has. Scores before and after an intervention
must be normalised the same way; ``normalise=False`` compares whitespace-separated tokens as given.

Alignment: jiwer (``jiwer.process_words``, Levenshtein alignment in C++ by rapidfuzz) when it can be
imported, otherwise a word-level Levenshtein alignment here. The fallback walks the cost matrix back the
way rapidfuzz does (common prefix and suffix set aside, then deletion, insertion, diagonal), so where
several alignments have the same cost both report the same substitution/deletion/insertion split, not
only the same WER. Plain strings only, like the rest of ``probing``.
"""
from __future__ import annotations

import re
import unicodedata

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

try:  # optional: faster, and the reference implementation users compare with
    import jiwer as _jiwer
except ImportError:  # pragma: no cover - depends on the environment
    _jiwer = None

__all__ = ["WordErrors", "normalise_text", "word_error_rate"]


@dataclass(frozen=True)
class WordErrors:
    """Corpus word error rate and the alignment counts it comes from.

    ``wer = (substitutions + deletions + insertions) / n_reference_words``; it can exceed 1 when the
    hypotheses hold many inserted words. ``hits + substitutions + deletions == n_reference_words``.
    """

    wer: float
    substitutions: int
    deletions: int
    insertions: int
    hits: int
    n_reference_words: int

    def as_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# normalisation

# Punctuation: any character that is not a letter, digit, whitespace or apostrophe (underscore included),
# except a point or comma between two digits ("3.5" is one word, not "3 5").
_PUNCTUATION = re.compile(r"(?<!\d)[.,]|[.,](?!\d)|[^\w\s'.,]|_")
# An apostrophe that is not between two word characters: quotes and possessive-plural tails ("dogs'").
_LOOSE_APOSTROPHE = re.compile(r"(?<!\w)'|'(?!\w)")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})


def normalise_text(text: str) -> str:
    """Lower case, punctuation replaced by spaces, whitespace collapsed; digits left as they are.

    Apostrophes inside words stay ("don't", "o'clock"; typographic ones become ``'``), other apostrophes
    (quotes, "dogs'") go. A point or comma between two digits stays ("3.5", "1,000"), so a number is one
    word. Punctuation becomes a space rather than nothing, so "end.Start" is two words, and a hyphenated
    "well-known" is two words on both sides of the comparison. Numbers are not spelled out ("7" and
    "seven" differ): spelling them out is language-specific and belongs to the caller if wanted.
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}")
    text = unicodedata.normalize("NFC", text).translate(_APOSTROPHES).lower()
    text = _LOOSE_APOSTROPHE.sub(" ", _PUNCTUATION.sub(" ", text))
    return " ".join(text.split())


# --------------------------------------------------------------------------------------------------
# alignment (the fallback when jiwer is not importable)


def _align_counts(reference: Sequence[Any], hypothesis: Sequence[Any]) -> tuple[int, int, int, int]:
    """(substitutions, deletions, insertions, hits) of a minimum-edit word alignment.

    Unit costs; the cost matrix is filled a row at a time with numpy (the insertion chain along a row is
    a running minimum), then walked back from the end. Among equal-cost alignments the walk prefers a
    deletion, then an insertion, then the diagonal, after setting aside the common prefix and suffix:
    rapidfuzz's choice, so the counts match jiwer's and not only the total.
    """
    ref, hyp = list(reference), list(hypothesis)
    start = 0
    while start < min(len(ref), len(hyp)) and ref[start] == hyp[start]:
        start += 1
    stop = 0
    while stop < min(len(ref), len(hyp)) - start and ref[-1 - stop] == hyp[-1 - stop]:
        stop += 1
    affix = start + stop
    ref, hyp = ref[start : len(ref) - stop], hyp[start : len(hyp) - stop]
    n, m = len(ref), len(hyp)
    if n == 0 or m == 0:
        return 0, n, m, affix

    vocabulary: dict[Any, int] = {}
    ref_codes = np.array([vocabulary.setdefault(w, len(vocabulary)) for w in ref], dtype=np.int64)
    hyp_codes = np.array([vocabulary.setdefault(w, len(vocabulary)) for w in hyp], dtype=np.int64)

    # cost[i, j]: edits turning ref[:i] into hyp[:j]
    cost = np.empty((n + 1, m + 1), dtype=np.int64)
    cost[0] = np.arange(m + 1)
    steps = np.arange(m + 1)
    for i in range(1, n + 1):
        above = cost[i - 1]
        candidate = np.empty(m + 1, dtype=np.int64)
        candidate[0] = i
        candidate[1:] = np.minimum(above[1:] + 1, above[:-1] + (ref_codes[i - 1] != hyp_codes))
        cost[i] = np.minimum.accumulate(candidate - steps) + steps  # insertions along the row

    substitutions = deletions = insertions = 0
    i, j = n, m
    while i and j:
        if cost[i, j] - cost[i - 1, j] == 1:  # rapidfuzz: VP bit set -> deletion
            deletions += 1
            i -= 1
            continue
        j -= 1
        if j and cost[i, j] - cost[i - 1, j] == -1:  # VN bit set -> insertion
            insertions += 1
            continue
        i -= 1
        substitutions += int(ref_codes[i] != hyp_codes[j])
    deletions += i
    insertions += j
    hits = n - substitutions - deletions + affix
    return substitutions, deletions, insertions, hits


# --------------------------------------------------------------------------------------------------
# corpus WER


def _transcripts(name: str, values: Any) -> list[str]:
    """A list of strings (one per utterance), or a one-line ValueError; a bare string is one utterance."""
    if isinstance(values, str):
        return [values]
    try:
        items = list(values)
    except TypeError:
        raise ValueError(
            f"{name} must be a list of strings (one per utterance), got {type(values).__name__}"
        ) from None
    for k, item in enumerate(items):
        if not isinstance(item, str):
            raise ValueError(f"{name}[{k}] must be a string, got {type(item).__name__}")
    return items


def word_error_rate(references: Any, hypotheses: Any, *, normalise: bool = True) -> WordErrors:
    """Corpus word error rate of ``hypotheses`` against ``references`` (one string per utterance each).

    Errors are summed over utterances and divided by the total number of reference words (not a mean of
    per-utterance WERs). With ``normalise`` both sides go through :func:`normalise_text` first; without
    it, words are the whitespace-separated tokens as given. An utterance whose reference is empty (after
    normalisation) counts its hypothesis words as insertions; a corpus with no reference word at all has
    no WER and raises. A bare string is taken as a one-utterance corpus.
    """
    refs = _transcripts("references", references)
    hyps = _transcripts("hypotheses", hypotheses)
    if len(refs) != len(hyps):
        raise ValueError(f"references and hypotheses have different lengths ({len(refs)} vs {len(hyps)})")
    if not refs:
        raise ValueError("references is empty")
    prepare = normalise_text if normalise else (lambda text: text)
    ref_words = [prepare(text).split() for text in refs]
    hyp_words = [prepare(text).split() for text in hyps]
    n_reference_words = sum(len(words) for words in ref_words)
    if n_reference_words == 0:
        raise ValueError("references hold no words (after normalisation): the WER is undefined")

    if _jiwer is not None:
        # Words are split here, so jiwer's default transform (strip, split on single spaces) sees the
        # same words as the fallback would.
        output = _jiwer.process_words([" ".join(w) for w in ref_words], [" ".join(w) for w in hyp_words])
        substitutions, deletions = int(output.substitutions), int(output.deletions)
        insertions, hits = int(output.insertions), int(output.hits)
    else:
        totals = np.sum([_align_counts(ref, hyp) for ref, hyp in zip(ref_words, hyp_words)], axis=0)
        substitutions, deletions, insertions, hits = (int(total) for total in totals)

    return WordErrors(
        wer=(substitutions + deletions + insertions) / n_reference_words,
        substitutions=substitutions,
        deletions=deletions,
        insertions=insertions,
        hits=hits,
        n_reference_words=n_reference_words,
    )
