from __future__ import annotations

import pytest

from speechprobe.encoders.base import EncoderError
from speechprobe.encoders.registry import FIXED, create_encoder, list_encoders


@pytest.mark.parametrize("name", ["ge2e", "crepe-tiny"])
def test_fixed_offline_encoders_build_frozen(name: str) -> None:
    encoder = create_encoder(name)
    assert encoder.name == name and not encoder.training
    assert not any(p.requires_grad for p in encoder.parameters())
    assert len(encoder.layer_names) == len(encoder.layer_dims) > 1


def test_random_twins_are_seeded_and_differ_from_the_pretrained_weights() -> None:
    pretrained = create_encoder("ge2e").weights_hash()
    first, again, other = (create_encoder(n).weights_hash() for n in ("random:ge2e", "random:ge2e@0", "random:ge2e@1"))
    assert first == again != other and pretrained not in (first, other)
    assert create_encoder("random:crepe-tiny@2").name == "random:crepe-tiny@2"
    from speechprobe.encoders.checkpoints import weight_changes
    from speechprobe.encoders.registry import random_twin

    assert random_twin("crepe-full") == "random:crepe-full" and random_twin("mfcc") is None
    full, twin = create_encoder("crepe-full"), create_encoder("random:crepe-full")
    rows = [row for row in weight_changes(full, twin) if row.relative is not None]  # same architecture, other weights
    assert len(rows) == 7 and all(0.5 < row.relative < 2.0 for row in rows)  # measured 0.997-1.001
    assert create_encoder("random:wav2vec2-tiny@3").weights_hash() == create_encoder("random:wav2vec2-tiny@3").weights_hash()


@pytest.mark.parametrize("name, message", [
    ("wav2vec9", "unknown encoder 'wav2vec9'; known: ge2e, whisper-tiny.en"),
    ("random:ge2e@x", "seed after @ must be a whole number"),
    ("random:conformer", "conformer"),
    ("hf:/no/such/model", "/no/such/model"),
])
def test_bad_names_are_one_clear_line(name: str, message: str) -> None:
    with pytest.raises(EncoderError, match=message) as error:
        create_encoder(name)
    assert "\n" not in str(error.value)


def test_listing_covers_every_family_and_says_what_is_offline() -> None:
    rows = {row["name"]: row for row in list_encoders()}
    assert set(FIXED) <= set(rows)
    assert rows["ge2e"]["offline"] and rows["whisper-tiny.en"]["offline"] and rows["crepe-tiny"]["offline"]
    assert {"random:wav2vec2", "random:ge2e", "random:crepe-tiny", "random:whisper-tiny.en"} <= set(rows)
    assert {row["architecture"] for row in rows.values()} >= {"LSTM", "CNN", "Transformer"}


def test_whisper_tiny_en_has_a_random_twin_with_the_same_architecture() -> None:
    import torch

    pretrained, random = create_encoder("whisper-tiny.en"), create_encoder("random:whisper-tiny.en@0")
    assert random.name == "random:whisper-tiny.en@0" and random.layer_names == pretrained.layer_names
    assert random.weights_hash() == create_encoder("random:whisper-tiny.en").weights_hash() != pretrained.weights_hash()
    assert {k: v.shape for k, v in random.state_dict().items()} == {k: v.shape for k, v in pretrained.state_dict().items()}
    # the fixed sinusoidal positions are not learned weights: both twins share them
    assert torch.allclose(random.encoder.embed_positions.weight, pretrained.encoder.embed_positions.weight, atol=1e-3)
