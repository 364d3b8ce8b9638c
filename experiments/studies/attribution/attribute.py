"""Input attribution: which input features (log-mel bins x frames, or waveform samples) a probe's decision rests on.

The encoder (its input features split off, see `SpeechEncoder.input_features`) and a trained probe form
one differentiable model, :class:`ProbedEncoder`: features -> the probe's layer -> the store's pooling over
the real frames -> the probe's standardisation and linear map (folded into one `nn.Linear`) -> logits.
Its probabilities are the probe's `predict_proba` on the store vector of the same utterance.

Methods run through captum's one `attribute()` interface: saliency (the signed gradient), gradient x input,
integrated gradients (baseline: silence, i.e. the utterance's feature minimum, or zeros for waveforms;
its completeness delta is reported), GradientSHAP (seeded) and LRP where every module has a rule
(captum's epsilon rule for Linear/Conv2d/pooling, pass-through for ReLU/Tanh/Dropout); otherwise
:class:`AttributionError` names the unsupported module types.

Sanity check (Adebayo et al. 2018, model randomisation): the probe's weights are re-drawn (seeded, same
scale) and every method recomputed; the Spearman rank correlation of |attribution| between the trained
and the randomised model is reported per method. A method whose map barely changes (correlation near 1)
shows the input, not what the model uses.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn, Tensor

from speechprobe.encoders.base import SpeechEncoder
from speechprobe.encoders.pooling import pool, pooled_dim
from speechprobe.errors import SpeechprobeError
from speechprobe.experiments.config import ATTRIBUTION_METHODS, DEFAULT_ATTRIBUTION_METHODS, IG_STEPS, SHAP_SAMPLES

METHODS, DEFAULT_METHODS = ATTRIBUTION_METHODS, DEFAULT_ATTRIBUTION_METHODS  # the config schema's lists
TITLES = {"saliency": "Saliency", "input_x_gradient": "Gradient x input", "integrated_gradients": "Integrated gradients",
          "gradient_shap": "GradientSHAP", "lrp": "LRP"}


class AttributionError(SpeechprobeError, ValueError):
    """A request the model cannot serve (LRP through an unsupported module, a mismatched probe)."""


class ProbedEncoder(nn.Module):
    """features (batch, ...) -> logits (batch, classes) of `probe` on `layer` of `encoder`, for one utterance length.

    `lengths` is the utterance's length in samples (one value); every row of a batch of features (captum
    stacks interpolation steps and samples) is taken to be that utterance.
    """

    def __init__(self, encoder: SpeechEncoder, layer: int, probe: Any, pooling: str, length: int) -> None:
        super().__init__()
        dim = pooled_dim(encoder.layer_dims[layer], pooling)
        coef = np.asarray(probe.coef_, dtype=np.float64)
        if coef.shape[1] != dim:
            raise AttributionError(f"the probe takes {coef.shape[1]} features, but layer "
                                   f"{encoder.layer_names[layer]} of {encoder.name} gives {dim} with {pooling} pooling")
        self.encoder, self.layer, self.pooling, self.length = encoder, int(layer), pooling, int(length)
        scale, mean = np.asarray(probe.scale_, np.float64), np.asarray(probe.mean_, np.float64)
        weight = coef / scale[None, :]                     # standardisation folded into the linear map
        bias = np.asarray(probe.intercept_, np.float64) - weight @ mean
        self.head = nn.Linear(coef.shape[1], coef.shape[0]).double()
        with torch.no_grad():
            self.head.weight.copy_(torch.from_numpy(weight))
            self.head.bias.copy_(torch.from_numpy(bias))
        self.head.requires_grad_(False)
        self.classes = [str(c) for c in probe.classes_]
        self.eval()

    def pooled(self, features: Tensor) -> Tensor:
        lengths = torch.full((features.shape[0],), self.length, dtype=torch.int64)
        output = self.encoder.forward_features(features, lengths, self.layer)
        return pool(output.states[self.layer], output.frame_lengths[self.layer], self.pooling)

    def forward(self, features: Tensor) -> Tensor:
        return self.head(self.pooled(features).double())

    def randomised(self, seed: int) -> ProbedEncoder:
        """A copy whose probe weights are re-drawn: Gaussian with the trained weights' std, bias zero (seeded)."""
        twin = copy.copy(self)
        twin._modules = dict(self._modules)
        generator = torch.Generator().manual_seed(seed)
        weight = self.head.weight
        std = float(weight.std()) or 1.0
        head = nn.Linear(weight.shape[1], weight.shape[0]).double().requires_grad_(False)
        with torch.no_grad():
            head.weight.copy_(torch.randn(weight.shape, generator=generator, dtype=torch.float64) * std)
            head.bias.zero_()
        twin._modules["head"] = head
        return twin


def lrp_unsupported(model: nn.Module) -> list[str]:
    """Type names of the leaf modules captum's LRP has no rule for (empty: LRP can run)."""
    from speechprobe.compat import lrp_supported_layers

    supported = lrp_supported_layers()
    names: list[str] = []
    for module in model.modules():
        if next(module.children(), None) is None and type(module) not in supported:
            if type(module).__name__ not in names:
                names.append(type(module).__name__)
    return names


def baseline_for(encoder: SpeechEncoder, features: Tensor, real_frames: int | None = None) -> Tensor:
    """The "absence of input" reference: zeros for a waveform; for a spectrogram, the minimum over the
    utterance's real frames everywhere (its quietest bin: silence at the recording's noise floor)."""
    if encoder.feature_kind == "waveform":
        return torch.zeros_like(features)
    real = features[:, :real_frames] if real_frames else features
    return torch.full_like(features, float(real.min()))


@dataclass(frozen=True)
class AttributionSettings:
    methods: tuple[str, ...] = DEFAULT_METHODS
    ig_steps: int = IG_STEPS
    shap_samples: int = SHAP_SAMPLES
    internal_batch: int = 16
    seed: int = 0


def attribute(model: ProbedEncoder, features: Tensor, target: int, method: str,
              settings: AttributionSettings = AttributionSettings(),
              real_frames: int | None = None) -> tuple[np.ndarray, float | None]:
    """One method's map (the features' shape, batch dropped) and its completeness delta (IG, SHAP) or None."""
    from captum.attr import LRP, GradientShap, InputXGradient, IntegratedGradients, Saliency

    inputs = features.detach().clone().requires_grad_(True)
    delta = None
    if method == "saliency":
        result = Saliency(model).attribute(inputs, target=target, abs=False)
    elif method == "input_x_gradient":
        result = InputXGradient(model).attribute(inputs, target=target)
    elif method == "integrated_gradients":
        result, delta = IntegratedGradients(model).attribute(
            inputs, baselines=baseline_for(model.encoder, features, real_frames), target=target, n_steps=settings.ig_steps,
            internal_batch_size=settings.internal_batch, return_convergence_delta=True)
    elif method == "gradient_shap":
        base = baseline_for(model.encoder, features, real_frames)
        numpy_state = np.random.get_state()  # captum draws the baselines' weights with np.random
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            np.random.seed(settings.seed)
            # baselines: silence and silence-to-input halfway; noise of 10% of the features' spread
            result, delta = GradientShap(model).attribute(
                inputs, baselines=torch.cat([base, 0.5 * (base + features)]), target=target,
                n_samples=settings.shap_samples, stdevs=0.1 * float(features.std()), return_convergence_delta=True)
        np.random.set_state(numpy_state)
    elif method == "lrp":
        unsupported = lrp_unsupported(model)
        if unsupported:
            raise AttributionError(f"LRP is not possible for {model.encoder.name}: captum's LRP has no rule for "
                                   f"{', '.join(unsupported)} (supported: Linear, Conv2d, pooling, BatchNorm2d, "
                                   "ReLU, Tanh, Dropout)")
        result = LRP(model).attribute(inputs, target=target)
    else:
        raise AttributionError(f"unknown attribution method {method!r}; choose from {', '.join(METHODS)}")
    delta_value = None if delta is None else float(torch.as_tensor(delta).abs().mean())
    return result.detach()[0].float().cpu().numpy(), delta_value


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (average ranks for ties); NaN when one is constant."""
    from scipy.stats import rankdata

    ra, rb = rankdata(a.ravel()), rankdata(b.ravel())
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


@dataclass
class Attribution:
    """Every method's map for one utterance and class, with the numbers the report and JSON carry."""

    maps: dict[str, np.ndarray]
    random_maps: dict[str, np.ndarray]
    summaries: dict[str, dict[str, Any]]
    probabilities: np.ndarray
    target: int
    target_class: str
    feature_kind: str
    feature_hop: int
    real_frames: int
    features: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)


def summarise(values: np.ndarray, real_frames: int, feature_kind: str, sample_rate: int, hop: int) -> dict[str, Any]:
    """Where the |attribution| mass lies: in real frames, by time, by thirds of the frequency axis."""
    mass = np.abs(values.astype(np.float64))
    total = float(mass.sum()) or 1.0
    over_time = mass.sum(axis=1) if mass.ndim == 2 else mass
    out: dict[str, Any] = {
        "total_abs": float(mass.sum()),
        "real_fraction": float(over_time[:real_frames].sum() / total),
        "peak_time_s": float(int(np.argmax(over_time)) * hop / sample_rate),
    }
    if mass.ndim == 2:
        thirds = np.array_split(mass[:real_frames].sum(axis=0), 3)
        real = sum(float(t.sum()) for t in thirds) or 1.0
        out["band_fractions"] = {"low": float(thirds[0].sum() / real), "mid": float(thirds[1].sum() / real),
                                 "high": float(thirds[2].sum() / real)}
    return out


def run_attribution(encoder: SpeechEncoder, layer: int, probe: Any, pooling: str, wave: np.ndarray,
                    target: int | None = None, settings: AttributionSettings = AttributionSettings(),
                    tell: Callable[[str], None] | None = None, skip_unsupported: bool = False) -> Attribution:
    """All of `settings.methods` on one utterance (`wave` at the encoder's rate) for class index `target`
    (default: the predicted class), and the model randomisation check for each.

    A method the model does not permit (LRP through an LSTM) raises :class:`AttributionError`, or with
    `skip_unsupported` is left out of the maps and its summary holds the message under "error"."""
    waves = torch.from_numpy(np.asarray(wave, dtype=np.float32))[None]
    lengths = torch.tensor([waves.shape[1]])
    with torch.no_grad():
        features = encoder.input_features(waves, lengths).float()
    model = ProbedEncoder(encoder, layer, probe, pooling, waves.shape[1])
    with torch.no_grad():
        probabilities = torch.softmax(model(features), dim=1)[0].numpy()
    target = int(np.argmax(probabilities)) if target is None else int(target)
    randomised = model.randomised(settings.seed + 1)
    real_frames = int(encoder.feature_frames(lengths)[0])
    with torch.no_grad():
        logit_gap = float(model(features)[0, target] - model(baseline_for(encoder, features, real_frames))[0, target])
    maps, random_maps, summaries = {}, {}, {}
    for method in settings.methods:
        if tell:
            tell(f"attribution: {method}")
        try:
            maps[method], delta = attribute(model, features, target, method, settings, real_frames)
        except AttributionError as error:
            if not skip_unsupported:
                raise
            summaries[method] = {"error": str(error)}
            continue
        random_maps[method], _ = attribute(randomised, features, target, method, settings, real_frames)
        summary = summarise(maps[method], real_frames, encoder.feature_kind, encoder.sample_rate, encoder.feature_hop)
        summary["randomisation_spearman"] = spearman(np.abs(maps[method]), np.abs(random_maps[method]))
        if delta is not None:
            summary["completeness_delta"] = delta
            summary["attribution_sum"] = float(maps[method].astype(np.float64).sum())
            if method == "integrated_gradients":
                summary["logit_gap"] = logit_gap  # the target logit at the input minus at the baseline
        summaries[method] = summary
    return Attribution(maps=maps, random_maps=random_maps, summaries=summaries, probabilities=probabilities,
                       target=target, target_class=model.classes[target], feature_kind=encoder.feature_kind,
                       feature_hop=int(encoder.feature_hop), real_frames=real_frames,
                       features=features[0].numpy())


def display_spectrogram(features: np.ndarray, feature_kind: str) -> np.ndarray:
    """What the figure shows under the maps: log power for a power mel; the log-mel as is."""
    if feature_kind == "power-mel":
        return 10.0 * np.log10(np.maximum(features, 1e-10))
    return features


def time_envelope(values: np.ndarray, hop: int) -> np.ndarray:
    """A waveform-level map as |attribution| summed over windows of `hop` samples."""
    mass = np.abs(values)
    n = len(mass) // hop
    return mass[: n * hop].reshape(n, hop).sum(axis=1) if n else mass


def check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise AttributionError(f"unknown attribution method {unknown[0]!r}; choose from {', '.join(METHODS)}")
    return tuple(dict.fromkeys(methods))
