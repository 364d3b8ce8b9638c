"""The encoder's own job under an intervention: what removing an attribute costs the network itself.

- GE2E (a speaker encoder): speaker-verification EER of its embedding layer (the last), trials drawn among the
  held-out test utterances only, so no speaker of a trial was seen by the probe or by whatever the intervention
  was fitted on; the EER within each gender group is the bias angle (does removing the attribute hurt one
  group's verification more?).
- Whisper (a recogniser): the word error rate of its transcripts, through
  ``speechprobe.encoders.transcription.transcribe`` (the shipped decoder reading the intervened encoder states)
  when that module is there; otherwise the result says "transcription not available" and the study goes on
  without it.
- Anything else: no own-job metric (``none``) unless the config asks for ``verification`` (the last layer's
  vectors as speaker embeddings).

Each function returns plain JSON values: ``{"kind", "available", "metric", "value", ..., "note"}``.
"""
from __future__ import annotations

import inspect
from typing import Any, Optional

import numpy as np

TRANSCRIPTION_MISSING = "transcription not available"


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


def _transcriber() -> tuple[Any, Optional[str]]:
    """``speechprobe.encoders.transcription.transcribe``, or None and why not."""
    try:
        from speechprobe.encoders import transcription
    except ImportError as error:
        return None, f"{TRANSCRIPTION_MISSING} (speechprobe.encoders.transcription cannot be imported: {error})"
    transcribe = getattr(transcription, "transcribe", None)
    if not callable(transcribe):
        return None, f"{TRANSCRIPTION_MISSING} (speechprobe.encoders.transcription has no transcribe())"
    return transcribe, None


def transcription_available() -> tuple[bool, Optional[str]]:
    transcribe, why = _transcriber()
    return transcribe is not None, why


def transcription_job(corpus: Any, encoder: Any, rows: np.ndarray, intervention: Any = None) -> dict:
    """WER of the encoder's transcripts of ``rows`` (held-out test utterances) against the corpus's ``text``, with
    ``intervention`` active in the forward pass: ``transcribe(encoder, corpus, rows=..., intervention=...)`` of
    ``speechprobe.encoders.transcription``. "transcription not available" when that module is missing or cannot
    take an intervention, or the corpus has no reference text (an intervention it cannot take makes the result
    unavailable rather than silently unintervened)."""
    from speechprobe.probing.transcripts import word_error_rate

    transcribe, why = _transcriber()
    if transcribe is None:
        return no_job("transcription", why)
    metadata = corpus.metadata
    if "text" not in metadata.columns or metadata["text"].iloc[rows].isna().any():
        return no_job("transcription", f"{TRANSCRIPTION_MISSING}: the corpus has no reference text for every test row")
    try:
        parameters = inspect.signature(transcribe).parameters
    except (TypeError, ValueError):
        parameters = {}
    takes = lambda name: name in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD  # noqa: E731
                                                   for p in parameters.values())
    if not (takes("intervention") and takes("rows")):
        return no_job("transcription", f"{TRANSCRIPTION_MISSING}: its transcribe() takes no rows= or intervention=")
    hypotheses = list(transcribe(encoder, corpus, rows=[int(i) for i in rows], intervention=intervention))
    references = metadata["text"].iloc[rows].astype(str).tolist()
    errors = word_error_rate(references, [str(h) for h in hypotheses])
    return {"kind": "transcription", "available": True, "metric": "wer", "value": float(errors.wer),
            "n_rows": int(len(rows)), "n_reference_words": int(errors.n_reference_words),
            "substitutions": int(errors.substitutions), "deletions": int(errors.deletions),
            "insertions": int(errors.insertions)}
