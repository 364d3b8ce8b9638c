"""Accuracy broken down by the groups of an attribute (e.g. gender), and whether the gap is more than chance.

Public API
----------
- :func:`group_gap` - accuracy per group with speaker-bootstrap intervals, and the gap between the best
  and the worst group with its own interval; ``flagged`` when that interval excludes 0.

Why a bootstrap of the gap itself, stratified by group: two overlapping per-group intervals do not mean
the gap is within chance (nor the reverse); resampling speakers within each group keeps every group's
size and gives the gap's own sampling distribution. Speakers, not utterances, are resampled: one
speaker's utterances are not independent, and a group of eight speakers is eight observations.

Plain arrays only, like the rest of ``probing``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np

from speechprobe.probing.metrics import Interval

__all__ = ["GroupGap", "group_gap"]


@dataclass(frozen=True)
class GroupGap:
    """Per-group accuracy (``accuracy[group]``) and the best-minus-worst ``gap`` (groups by point estimate)."""

    groups: list[str]
    accuracy: dict[str, Interval]
    n_examples: dict[str, int]
    n_speakers: dict[str, int]
    best_group: str
    worst_group: str
    gap: Interval
    flagged: bool  # the gap's interval lies above 0: more than chance variation between speakers

    def as_dict(self) -> dict:
        return asdict(self)


def _percentiles(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(samples, [tail, 1.0 - tail])
    return float(low), float(high)


def group_gap(
    y_true: Any,
    y_pred: Any,
    attribute: Any,
    speakers: Optional[Any] = None,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> GroupGap:
    """Accuracy of ``y_pred`` per value of ``attribute``, and the gap between best and worst group.

    ``speakers`` (one id per example) makes the bootstrap resample whole speakers within each group;
    without it examples are resampled. Every group needs at least one example; a speaker must belong to
    one group only (an attribute of the speaker, like gender or dialect), else it is refused.
    """
    true = np.asarray(y_true).astype(str)
    pred = np.asarray(y_pred).astype(str)
    attr = np.asarray(attribute).astype(str)
    if not (true.shape == pred.shape == attr.shape) or true.ndim != 1:
        raise ValueError(f"y_true, y_pred and attribute must be 1-D of one length, got {true.shape}, {pred.shape}, {attr.shape}")
    if true.size == 0:
        raise ValueError("no examples")
    if not isinstance(n_resamples, (int, np.integer)) or isinstance(n_resamples, bool) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}")
    units = np.arange(true.size).astype(str) if speakers is None else np.asarray(speakers).astype(str)
    if units.shape != true.shape:
        raise ValueError(f"speakers must have one id per example ({true.size}), got shape {units.shape}")
    groups = sorted(set(attr.tolist()))
    if len(groups) < 2:
        raise ValueError(f"the attribute has {len(groups)} group(s); a gap needs at least two")
    hits = (true == pred).astype(np.float64)
    rng = np.random.default_rng(seed)
    point, samples, n_examples, n_speakers = {}, {}, {}, {}
    for group in groups:
        rows = attr == group
        unit_ids, inverse = np.unique(units[rows], return_inverse=True)
        mixed = set(unit_ids.tolist()) & set(units[~rows].tolist())
        if mixed and speakers is not None:
            raise ValueError(f"speaker {sorted(mixed)[0]!r} appears in more than one group of the attribute")
        unit_hits = np.bincount(inverse, weights=hits[rows], minlength=unit_ids.size)
        unit_n = np.bincount(inverse, minlength=unit_ids.size).astype(np.float64)
        draws = rng.multinomial(unit_ids.size, np.full(unit_ids.size, 1.0 / unit_ids.size), size=n_resamples)
        samples[group] = (draws @ unit_hits) / np.maximum(draws @ unit_n, 1.0)
        point[group] = float(unit_hits.sum() / unit_n.sum())
        n_examples[group], n_speakers[group] = int(rows.sum()), int(unit_ids.size)
    resampled = "groups" if speakers is not None else "examples"
    accuracy = {}
    for group in groups:
        low, high = _percentiles(samples[group], confidence)
        accuracy[group] = Interval(point[group], low, high, float(confidence), int(n_resamples), resampled)
    best = max(groups, key=lambda g: (point[g], g))
    worst = min(groups, key=lambda g: (point[g], g))
    gap_samples = samples[best] - samples[worst]
    low, high = _percentiles(gap_samples, confidence)
    gap = Interval(point[best] - point[worst], low, high, float(confidence), int(n_resamples), resampled)
    return GroupGap(groups=groups, accuracy=accuracy, n_examples=n_examples, n_speakers=n_speakers,
                    best_group=best, worst_group=worst, gap=gap, flagged=bool(low > 0.0))
