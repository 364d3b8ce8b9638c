"""The encoder's own job under an intervention: what removing an attribute costs the network itself.

- GE2E (a speaker encoder): speaker-verification EER of its embedding layer (the last), trials drawn among the
  held-out test utterances only, so no speaker of a trial was seen by the probe or by whatever the intervention
  was fitted on; the EER within each gender group is the bias angle (does removing the attribute hurt one
  group's verification more?).
- Whisper (a recogniser): the word error rate of its transcripts of the clean-channel test utterances, overall
  and per gender, through ``speechprobe.encoders.transcription.transcribe`` (the shipped decoder reading the
  intervened encoder states).
- Anything else: no own-job metric (``none``) unless the config asks for ``verification`` (the last layer's
  vectors as speaker embeddings).

Each function returns plain JSON values: ``{"kind", "available", "metric", "value", ..., "note"}``.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

CLEAN_CHANNEL = "clean"  # tasks.catalog.CHANNEL_NAMES[0]


def job_kind(requested: str, encoder: str) -> str:
    """The config's ``job`` with ``auto`` resolved from the encoder's name (random twins included)."""
    if requested != "auto":
        return requested
    base = encoder.split(":", 1)[1] if encoder.startswith("random:") else encoder
    base = base.split("@", 1)[0]
    if base == "ge2e":
        return "verification"
    if base.startswith("whisper"):
        return "transcription"
    return "none"


def no_job(kind: str = "none", note: str = "no own-job metric for this encoder (job: none)") -> dict:
    return {"kind": kind, "available": False, "metric": None, "value": None, "note": note}


def verification_job(embeddings: np.ndarray, speakers: np.ndarray, rows: np.ndarray, *, layer: str, n_pairs: int,
                     seed: int, groups: Optional[np.ndarray] = None, group_column: Optional[str] = None) -> dict:
    """Speaker-verification EER of ``embeddings`` among ``rows`` (the held-out test utterances), overall and
    within each group. A group whose rows hold no target or no non-target trial (fewer than two speakers, or no
    speaker with two utterances) gets ``None`` and the reason."""
    from speechprobe.probing.verification import verification_eer

    result: dict[str, Any] = {"kind": "verification", "available": True, "metric": "eer", "layer": layer,
                              "rows": "test", "n_rows": int(len(rows)),
                              "n_speakers": int(len(np.unique(speakers[rows])))}
    try:
        overall = verification_eer(embeddings, speakers, rows, n_pairs=n_pairs, seed=seed)
    except ValueError as error:
        return {**result, "available": False, "value": None, "note": f"no EER: {error}"}
    result.update(value=float(overall.eer), threshold=float(overall.threshold), n_target=overall.n_target,
                  n_nontarget=overall.n_nontarget)
    if groups is not None:
        by_group: dict[str, Any] = {}
        for value in sorted(np.unique(groups[rows]).tolist(), key=str):
            chosen = rows[groups[rows] == value]
            try:
                found = verification_eer(embeddings, speakers, chosen, n_pairs=n_pairs, seed=seed)
                by_group[str(value)] = {"eer": float(found.eer), "n_target": found.n_target,
                                        "n_nontarget": found.n_nontarget,
                                        "n_speakers": int(len(np.unique(speakers[chosen])))}
            except ValueError as error:
                by_group[str(value)] = {"eer": None, "note": str(error),
                                        "n_speakers": int(len(np.unique(speakers[chosen])))}
        result.update(group_column=group_column, by_group=by_group)
    return result


def transcription_rows(metadata: Any, rows: np.ndarray, channel: str = CLEAN_CHANNEL) -> tuple[np.ndarray, str]:
    """The rows whose transcripts are scored: those of ``rows`` on the clean channel when the corpus has one (the
    issue's measure: the recogniser's job on clean speech, so a channel's noise does not swamp what the
    intervention does), else all of them; and a description of the choice."""
    rows = np.asarray(rows)
    if "channel" in metadata.columns:
        clean = rows[metadata["channel"].astype(str).to_numpy()[rows] == channel]
        if len(clean):
            return clean, f"the {channel}-channel test utterances"
    return rows, "the test utterances"


def transcription_job(corpus: Any, encoder: Any, rows: np.ndarray, intervention: Any = None, *,
                      groups: Optional[np.ndarray] = None, group_column: Optional[str] = None,
                      examples: int = 3) -> dict:
    """WER of Whisper's transcripts of the clean-channel ``rows`` (held-out test utterances) against the corpus's
    ``text``, with ``intervention`` active in the encoder's forward pass
    (``speechprobe.encoders.transcription.transcribe``: the shipped decoder reads the intervened states), overall
    and within each group; how many transcripts loop (Whisper's compression-ratio test) and the first
    ``examples`` transcripts, so a reader sees what changed."""
    from speechprobe.encoders.transcription import looping, transcribe
    from speechprobe.probing.transcripts import word_error_rate

    metadata = corpus.metadata
    rows, which = transcription_rows(metadata, rows)
    if "text" not in metadata.columns or metadata["text"].iloc[rows].isna().any():
        return no_job("transcription", "the corpus has no reference text for every test row: no WER")
    hypotheses = [str(h) for h in transcribe(encoder, corpus, rows=[int(i) for i in rows], intervention=intervention)]
    references = metadata["text"].iloc[rows].astype(str).tolist()
    errors = word_error_rate(references, hypotheses)
    result: dict[str, Any] = {
        "kind": "transcription", "available": True, "metric": "wer", "value": float(errors.wer), "rows": which,
        "n_rows": int(len(rows)), "n_reference_words": int(errors.n_reference_words),
        "substitutions": int(errors.substitutions), "deletions": int(errors.deletions),
        "insertions": int(errors.insertions), "looping": int(sum(looping(h) for h in hypotheses)),
        "examples": [{"row": int(r), "reference": ref, "transcript": hyp}
                     for r, ref, hyp in list(zip(rows.tolist(), references, hypotheses))[:examples]]}
    if groups is not None:
        by_group: dict[str, Any] = {}
        member_groups = np.asarray(groups)[rows]
        for value in sorted(np.unique(member_groups).tolist(), key=str):
            chosen = np.flatnonzero(member_groups == value)
            found = word_error_rate([references[i] for i in chosen], [hypotheses[i] for i in chosen])
            by_group[str(value)] = {"wer": float(found.wer), "n_rows": int(len(chosen)),
                                    "n_reference_words": int(found.n_reference_words)}
        result.update(group_column=group_column, by_group=by_group)
    return result
