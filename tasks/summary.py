"""A corpus at a glance: counts per label and per cell, so imbalance is seen before anything is probed."""
from __future__ import annotations

import pandas as pd

LABELS = ("gender", "dialect", "channel")


def _counts_line(metadata: pd.DataFrame, column: str) -> str:
    counts = metadata[column].value_counts().sort_index()
    return f"{column:<9} " + " | ".join(f"{label} {count}" for label, count in counts.items())


def _table(title: str, table: pd.DataFrame) -> list[str]:
    return [title, *("  " + line for line in table.to_string().splitlines())]


def summarize(metadata: pd.DataFrame, source: str = "") -> str:
    """Counts per label, speakers per gender x dialect cell, utterances per channel x label."""
    lines = []
    head = f"{len(metadata)} utterances"
    if "speaker" in metadata:
        head += f", {metadata['speaker'].nunique()} speakers"
    if "duration" in metadata:
        head += f", {metadata['duration'].sum() / 60:.1f} min of audio"
    lines.append(f"corpus {source}: {head}" if source else f"corpus: {head}")
    labels = [c for c in LABELS if c in metadata]
    lines += [_counts_line(metadata, c) for c in labels]
    if "speaker" in metadata:
        per_speaker = metadata.groupby("speaker").size()
        lines.append(f"utterances per speaker: {per_speaker.min()} to {per_speaker.max()}")
        speakers = metadata.drop_duplicates("speaker")
        if {"gender", "dialect"} <= set(metadata):
            lines += _table("speakers per gender x dialect:", pd.crosstab(speakers["gender"], speakers["dialect"]))
    if "channel" in metadata:
        for label in (c for c in ("gender", "dialect") if c in metadata):
            lines += _table(f"utterances per {label} x channel:", pd.crosstab(metadata[label], metadata["channel"]))
    if "text_kind" in metadata:
        kinds = metadata.groupby("text_kind")["text"].nunique()
        lines.append("distinct texts: " + ", ".join(f"{kinds[k]} {k}" for k in kinds.index))
    return "\n".join(lines)
