"""Input-attribution figures: |attribution| over the input features, one panel per method."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from speechprobe.experiments.plotting import PANEL_H, PANEL_W, pyplot, RED, safe_name, save_figure

def _log_spectrogram(wave: Any, hop: int = 160, n_fft: int = 400) -> Any:
    """A plain log power spectrogram (frames, bins) for showing a waveform-level map over."""
    import numpy as np

    wave = np.asarray(wave, dtype=np.float64)
    if len(wave) < n_fft:
        wave = np.pad(wave, (0, n_fft - len(wave)))
    frames = np.lib.stride_tricks.sliding_window_view(wave, n_fft)[::hop] * np.hanning(n_fft)
    return 10 * np.log10(np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-10)


def draw_attribution(info: dict, features: Any, maps: dict, path: Path) -> Path:
    """One panel per method: the utterance's spectrogram in grey, |attribution| overlaid in colour (feature-
    level maps), or its time envelope as a line (waveform-level maps); the randomisation correlation in
    each title. `info` is the command's attribution.json (feature kind, hop, rate, real frames, methods)."""
    import numpy as np

    plt = pyplot()
    kind, hop, rate = info["feature_kind"], int(info["feature_hop"]), int(info["sample_rate"])
    real = int(info["real_frames"])
    features = np.asarray(features)
    if kind == "waveform":
        background = _log_spectrogram(features[:real])
        step = 160
    else:
        background = features[:real]
        if kind == "power-mel":
            background = 10 * np.log10(np.maximum(background, 1e-10))
        step = hop
    names = list(maps)
    fig, axes = plt.subplots(1, len(names), figsize=(PANEL_W * len(names) * 0.9, PANEL_H), squeeze=False)
    duration = (real if kind == "waveform" else background.shape[0] * step) / rate
    extent = (0, duration, 0, background.shape[1])
    for ax, name in zip(axes[0], names):
        ax.imshow(background.T, origin="lower", aspect="auto", cmap="gray", extent=extent)
        values = np.abs(np.asarray(maps[name], dtype=np.float64))
        if kind == "waveform":
            n = min(real, len(values)) // step
            envelope = values[: n * step].reshape(n, step).sum(axis=1) if n else values
            twin = ax.twinx()
            twin.plot((np.arange(len(envelope)) + 0.5) * step / rate, envelope / (envelope.max() or 1), color=RED, lw=1)
            twin.set_ylim(0, 1.05)
            twin.set_yticks([])
        else:
            overlay = values[:real]
            overlay = overlay / (np.quantile(overlay, 0.995) or overlay.max() or 1)
            ax.imshow(np.clip(overlay, 0, 1).T, origin="lower", aspect="auto", cmap="inferno",
                      alpha=np.clip(overlay, 0, 1).T ** 0.5 * 0.85, extent=extent)
        summary = info["methods"][name]
        rho = summary.get("randomisation_spearman")
        title = f"{name.replace('_', ' ')}\nrandomised-probe rank corr. {rho:.2f}" if rho is not None else name
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("time (s)")
    axes[0][0].set_ylabel("mel band" if kind != "waveform" else "frequency bin")
    fig.suptitle(f"{info['encoder']} {info['layer']}: {info['utterance']} -> {info['target']} "
                 f"(p = {info['probabilities'][info['target']]:.2f})", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def draw_attribution_file(info: dict, maps_file: Path, path: Path) -> Path:
    """`draw_attribution` from a saved attribution.npz (features and map_<method> arrays)."""
    import numpy as np

    with np.load(maps_file) as data:
        maps = {m: data[f"map_{m}"] for m in info["methods"] if f"map_{m}" in data}
        return draw_attribution(info, data["features"], maps, path)


def attribution_figure_name(entry: dict) -> str:
    """The figure name of a sweep attribution unit's first utterance (`attribution_ge2e_gender`)."""
    return f"attribution_{safe_name(entry['encoder'])}_{safe_name(entry['task'])}"
