"""Word error rate: hand-worked counts on both backends, normalisation, corpus aggregation, bad input."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from speechprobe.probing import transcripts
from speechprobe.probing.transcripts import WordErrors, _align_counts, normalise_text, word_error_rate

try:
    import jiwer
except ImportError:
    jiwer = None


@pytest.fixture(params=["builtin", "jiwer"])
def backend(request, monkeypatch) -> str:
    """Runs a test on the word_error_rate fallback alignment and, where importable, on jiwer."""
    if request.param == "builtin":
        monkeypatch.setattr(transcripts, "_jiwer", None)
    elif jiwer is None:
        pytest.skip("jiwer is not importable")
    else:
        monkeypatch.setattr(transcripts, "_jiwer", jiwer)
    return request.param


def counts(result: WordErrors) -> tuple[int, int, int, int]:
    return result.substitutions, result.deletions, result.insertions, result.hits


# --------------------------------------------------------------------------------------------------
# hand-worked cases (both backends)


def test_identical_transcripts_have_no_error(backend) -> None:
    result = word_error_rate(["the cat sat"], ["the cat sat"])
    assert result.wer == 0.0
    assert counts(result) == (0, 0, 0, 3)
    assert result.n_reference_words == 3


def test_one_substitution_in_four_words(backend) -> None:
    result = word_error_rate(["the cat sat down"], ["the dog sat down"])
    assert result.wer == 0.25
    assert counts(result) == (1, 0, 0, 3)


def test_insertions_and_deletions_are_counted_apart(backend) -> None:
    inserted = word_error_rate(["the cat sat"], ["the big cat sat there"])
    assert counts(inserted) == (0, 0, 2, 3)
    assert inserted.wer == pytest.approx(2 / 3)
    deleted = word_error_rate(["the big cat sat there"], ["the cat sat"])
    assert counts(deleted) == (0, 2, 0, 3)
    assert deleted.wer == pytest.approx(2 / 5)


def test_wer_can_exceed_one_with_many_insertions(backend) -> None:
    assert word_error_rate(["yes"], ["oh yes yes yes indeed"]).wer == 4.0


def test_empty_hypothesis_is_all_deletions(backend) -> None:
    result = word_error_rate(["the cat sat"], [""])
    assert result.wer == 1.0
    assert counts(result) == (0, 3, 0, 0)


def test_equal_cost_alignments_split_the_same_way_on_both_backends(backend) -> None:
    # "a b" -> "b c": two substitutions, or delete a / keep b / insert c; both cost 2 (rapidfuzz: 2 subs)
    assert counts(word_error_rate(["a b"], ["b c"])) == (2, 0, 0, 0)


def test_corpus_wer_sums_errors_over_utterances(backend) -> None:
    references = ["one two three four five six seven eight nine ten", "hello there"]
    hypotheses = ["one two three four five six seven eight nine ten", "hello here"]
    result = word_error_rate(references, hypotheses)
    assert result.wer == pytest.approx(1 / 12)  # the mean of per-utterance WERs would be (0 + 1/2) / 2
    assert result.n_reference_words == 12


def test_an_empty_reference_utterance_counts_its_hypothesis_as_insertions(backend) -> None:
    result = word_error_rate(["the cat", "..."], ["the cat", "uh huh"])  # "..." normalises to nothing
    assert counts(result) == (0, 0, 2, 2)
    assert result.wer == 1.0


def test_normalisation_ignores_case_and_punctuation(backend) -> None:
    assert word_error_rate(["Hello, World!"], ["hello world"]).wer == 0.0
    raw = word_error_rate(["Hello, World!"], ["hello world"], normalise=False)
    assert counts(raw) == (2, 0, 0, 0)


# --------------------------------------------------------------------------------------------------
# normaliser


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Hello, World!", "hello world"),
        ("  many\t spaces\n here ", "many spaces here"),
        ("Don't 'quote' the dogs' bones", "don't quote the dogs bones"),
        ("It\u2019s o\u2019clock", "it's o'clock"),
        ("end.Start well-known A_B", "end start well known a b"),
        ("It costs $3.50, or 1,000 yen; 7 items.", "it costs 3.50 or 1,000 yen 7 items"),
        ("Caf\u0065\u0301 \u00c9COLE", "caf\u00e9 \u00e9cole"),  # decomposed accent kept in the word
        ("?!", ""),
    ],
)
def test_normalise_text(text: str, expected: str) -> None:
    assert normalise_text(text) == expected


# --------------------------------------------------------------------------------------------------
# fallback alignment


def brute_force_distance(ref: list[str], hyp: list[str]) -> int:
    """Textbook Levenshtein distance over words, cell by cell."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(hyp) + 1)] for i in range(len(ref) + 1)]
    for i in range(1, len(ref) + 1):
        for j in range(1, len(hyp) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]))
    return d[-1][-1]


def test_fallback_alignment_is_a_minimum_edit_alignment() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        ref = [str(w) for w in rng.integers(0, 4, int(rng.integers(0, 12)))]
        hyp = [str(w) for w in rng.integers(0, 4, int(rng.integers(0, 12)))]
        s, d, i, h = _align_counts(ref, hyp)
        assert s + d + i == brute_force_distance(ref, hyp)
        assert s + d + h == len(ref) and s + i + h == len(hyp)


@pytest.mark.skipif(jiwer is None, reason="jiwer is not importable")
def test_fallback_alignment_agrees_with_jiwer_count_for_count() -> None:
    rng = np.random.default_rng(1)
    for trial in range(400):
        length = int(rng.integers(1, 80 if trial % 10 == 0 else 12))
        ref = [str(w) for w in rng.integers(0, int(rng.integers(2, 8)), length)]
        hyp = [w if rng.random() < 0.7 else str(rng.integers(0, 8)) for w in ref if rng.random() > 0.1]
        hyp += [str(w) for w in rng.integers(0, 8, int(rng.integers(0, 3)))]
        output = jiwer.process_words(" ".join(ref), " ".join(hyp))
        expected = (output.substitutions, output.deletions, output.insertions, output.hits)
        assert _align_counts(ref, hyp) == expected, (ref, hyp)


# --------------------------------------------------------------------------------------------------
# result and bad input


def test_result_is_frozen_and_serialisable() -> None:
    result = word_error_rate("the cat sat", "the cat")  # a bare string is one utterance
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.wer = 0.0  # type: ignore[misc]
    assert result.as_dict() == dict(
        wer=1 / 3, substitutions=0, deletions=1, insertions=0, hits=2, n_reference_words=3
    )


@pytest.mark.parametrize(
    "references, hypotheses, message",
    [
        (["a b", "c"], ["a b"], r"different lengths \(2 vs 1\)"),
        ([], [], "references is empty"),
        (["", " .. "], ["a", ""], "no words"),
        (["a", None], ["a", "b"], r"references\[1\] must be a string"),
        (["a"], [3], r"hypotheses\[0\] must be a string"),
        (5, ["a"], "list of strings"),
    ],
)
def test_word_error_rate_rejects_bad_input(references, hypotheses, message) -> None:
    with pytest.raises(ValueError, match=message):
        word_error_rate(references, hypotheses)
