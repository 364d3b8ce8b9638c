"""Input attribution on tiny models: the encoder + probe model, captum's methods, LRP and the sanity check."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from speechprobe.encoders.base import EncoderOutput, SpeechEncoder
from speechprobe.encoders.ge2e import GE2EEncoder
from speechprobe.encoders.pooling import pool
from speechprobe.experiments.studies.attribution.attribute import (attribute, AttributionError, AttributionSettings, lrp_unsupported,
                                                 ProbedEncoder, run_attribution, spearman)

BINS, HOP, PLANTED = 16, 16, (3, 5)


class PlantedEncoder(SpeechEncoder):
    """Features: non-overlapping 16-sample frames as 16 "bins"; one Linear + ReLU layer reading only bins 3 and 5."""

    feature_kind = "log-mel"
    feature_hop = HOP

    def __init__(self) -> None:
        super().__init__()
        self.name, self.sample_rate, self.min_samples = "planted", 16000, HOP
        self.layer_names, self.layer_dims = ("hidden",), (6,)
        torch.manual_seed(0)
        self.linear = nn.Linear(BINS, 6)
        with torch.no_grad():
            mask = torch.zeros(BINS)
            mask[list(PLANTED)] = 1
            self.linear.weight.mul_(mask)
        self.relu = nn.ReLU()
        self.freeze()

    def input_features(self, waves, lengths):
        frames = waves.shape[1] // HOP
        return waves[:, : frames * HOP].reshape(waves.shape[0], frames, HOP)

    def feature_frames(self, lengths):
        return torch.as_tensor(lengths) // HOP

    def forward_features(self, features, lengths, last_layer=None):
        states = self.relu(self.linear(features))
        return EncoderOutput([states], [torch.as_tensor(lengths) // HOP])

    def forward(self, waves, lengths):
        return self.forward_features(self.input_features(waves, lengths), lengths)


def _probe(dim: int, classes=("a", "b", "c"), seed: int = 0) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    return SimpleNamespace(coef_=rng.normal(size=(len(classes), dim)), intercept_=rng.normal(size=len(classes)),
                           mean_=rng.normal(size=dim), scale_=rng.uniform(0.5, 2.0, size=dim),
                           classes_=np.array(classes))


def _probabilities(probe, X: np.ndarray) -> np.ndarray:
    logits = ((X - probe.mean_) / probe.scale_) @ probe.coef_.T + probe.intercept_
    logits -= logits.max(axis=1, keepdims=True)
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def planted():
    encoder = PlantedEncoder()
    wave = np.random.default_rng(1).normal(size=HOP * 40).astype(np.float32)
    probe = _probe(6)
    return encoder, probe, wave


def test_probed_encoder_gives_the_probes_probabilities_on_the_pooled_vector() -> None:
    encoder = GE2EEncoder(pretrained=False)
    wave = torch.from_numpy(np.random.default_rng(2).normal(scale=0.1, size=5000).astype(np.float32))[None]
    lengths = torch.tensor([5000])
    for layer, pooling in ((1, "mean"), (3, "meanstd")):
        probe = _probe(256 * (2 if pooling == "meanstd" else 1))
        with torch.no_grad():
            output = encoder(wave, lengths)
            vector = pool(output.states[layer], output.frame_lengths[layer], pooling).double().numpy()
            model = ProbedEncoder(encoder, layer, probe, pooling, 5000)
            got = torch.softmax(model(encoder.input_features(wave, lengths)), dim=1).numpy()
        np.testing.assert_allclose(got, _probabilities(probe, vector), atol=1e-4)
    with pytest.raises(AttributionError, match="takes 256 features.*gives 512"):
        ProbedEncoder(encoder, 0, _probe(256), "meanstd", 5000)


def test_attribution_lies_on_the_planted_bins_and_completeness_holds(planted) -> None:
    encoder, probe, wave = planted
    result = run_attribution(encoder, 0, probe, "mean", wave,
                             settings=AttributionSettings(methods=("saliency", "input_x_gradient", "integrated_gradients",
                                                                   "gradient_shap", "lrp"), ig_steps=64, shap_samples=8))
    other = [b for b in range(BINS) if b not in PLANTED]
    for method, values in result.maps.items():
        assert values.shape == (40, BINS), method
        mass = np.abs(values)
        assert mass[:, list(PLANTED)].sum() > 0, method
        assert mass[:, other].sum() <= 1e-6 * mass.sum(), method
    ig = result.summaries["integrated_gradients"]
    assert abs(ig["attribution_sum"] - ig["logit_gap"]) < 1e-2 * max(1.0, abs(ig["logit_gap"]))
    assert ig["completeness_delta"] < 1e-2
    # the randomised probe reads the same bins differently: the saliency map changes
    assert result.summaries["saliency"]["randomisation_spearman"] < 1.0
    cols = list(PLANTED)
    assert spearman(np.abs(result.maps["saliency"][:, cols]), np.abs(result.random_maps["saliency"][:, cols])) < 0.9
    # the same seed gives the same GradientSHAP map
    again, _ = attribute(ProbedEncoder(encoder, 0, probe, "mean", len(wave)),
                         encoder.input_features(torch.from_numpy(wave)[None], torch.tensor([len(wave)])),
                         result.target, "gradient_shap", AttributionSettings(shap_samples=8), result.real_frames)
    np.testing.assert_allclose(again, result.maps["gradient_shap"], rtol=1e-5, atol=1e-7)


def test_lrp_runs_on_a_linear_relu_model(planted) -> None:
    encoder, probe, wave = planted
    model = ProbedEncoder(encoder, 0, probe, "mean", len(wave))
    assert lrp_unsupported(model) == []
    features = encoder.input_features(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
    values, _ = attribute(model, features, 1, "lrp")
    assert np.isfinite(values).all() and np.abs(values).sum() > 0


def test_lrp_names_the_modules_it_cannot_handle() -> None:
    encoder = GE2EEncoder(pretrained=False)
    model = ProbedEncoder(encoder, 0, _probe(256), "mean", 4000)
    assert lrp_unsupported(model) == ["LSTM"]
    features = encoder.input_features(torch.zeros(1, 4000) + 0.01, torch.tensor([4000]))
    with pytest.raises(AttributionError, match="no rule for LSTM"):
        attribute(model, features, 0, "lrp")
    with pytest.raises(AttributionError, match="unknown attribution method 'occlusion'"):
        attribute(model, features, 0, "occlusion")


def test_spearman() -> None:
    a = np.arange(10.0)
    assert spearman(a, a ** 3) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert np.isnan(spearman(a, np.ones(10)))


@pytest.mark.parametrize("kind, shape", [("waveform", (8000,)), ("log-mel", (50, 40))])
def test_figure_draws_one_panel_per_method(kind: str, shape: tuple, tmp_path) -> None:
    from speechprobe.experiments.studies.attribution.figures import draw_attribution

    rng = np.random.default_rng(0)
    features = rng.normal(size=shape).astype(np.float32)
    maps = {"saliency": rng.normal(size=shape), "integrated_gradients": rng.normal(size=shape)}
    info = {"feature_kind": kind, "feature_hop": 1 if kind == "waveform" else 160, "sample_rate": 16000,
            "real_frames": shape[0] - 5, "encoder": "toy", "layer": "l", "utterance": "u", "target": "a",
            "probabilities": {"a": 0.7, "b": 0.3},
            "methods": {"saliency": {"randomisation_spearman": 0.5}, "integrated_gradients": {"randomisation_spearman": 0.2}}}
    path = draw_attribution(info, features, maps, tmp_path / "a.png")
    for coloured in attribution_figure_panels(path, len(maps)):
        # the maps are noise over the whole utterance: their colour (overlay or envelope line) spans the panel's
        # time axis (the axes take about 4/5 of a panel's width) and rises and falls (a flat line is 1-3 px high)
        assert coloured.any(axis=0).mean() > 0.5 and coloured.any(axis=1).sum() > 10


def attribution_figure_panels(path: Path, n_panels: int) -> list[np.ndarray]:
    """The attribution figure at `path` decoded as a PNG of `n_panels` panels of the plotting module's size,
    with its spectrogram drawn (grey, over about half the image; a blank figure is white but for its
    text); returned as one column strip per panel, each a mask of its coloured pixels: the maps' overlay
    or envelope line, the only colour in the figure (spectrogram, text and axes are grey)."""
    from matplotlib.image import imread

    from speechprobe.experiments.plotting import DPI, PANEL_H, PANEL_W

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)[..., :3]
    assert abs(image.shape[0] - PANEL_H * DPI) < 1 and abs(image.shape[1] - 0.9 * PANEL_W * n_panels * DPI) < 1
    assert (image.min(axis=-1) < 0.9).mean() > 0.3
    coloured = image.max(axis=-1) - image.min(axis=-1) > 0.2
    return np.array_split(coloured, n_panels, axis=1)
