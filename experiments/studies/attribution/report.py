"""The input-attribution subsection of the sweep's report."""
from __future__ import annotations

from pathlib import Path

from speechprobe.experiments.studies.attribution.figures import attribution_figure_name
from speechprobe.experiments.writing import bullets, figures_block, finite, join_words, num, pct

ATTRIBUTION_TITLES = {"saliency": "saliency", "input_x_gradient": "gradient x input",
                      "integrated_gradients": "integrated gradients", "gradient_shap": "GradientSHAP", "lrp": "LRP"}


def attribution_sentence(entry: dict) -> str:
    """One finding per encoder x task: the randomisation correlations and where the |attribution| mass lies."""
    records, means = entry.get("utterances") or [], entry.get("mean") or {}
    if not records:
        return ""
    n = len(records)
    head = (f"**{entry['encoder']} / {entry['task']}** (best layer {entry['layer']}, {n} test utterance{'s' * (n > 1)}, "
            f"attributed to the true class):")
    rhos = [f"{ATTRIBUTION_TITLES.get(m, m)} {num(v.get('randomisation_spearman'))}"
            for m, v in means.items() if v.get("randomisation_spearman") is not None]
    text = head
    if rhos:
        text += (" rank correlation of |attribution| between the trained probe and a probe with re-drawn weights: "
                 f"{', '.join(rhos)} (1 = the same ranking whatever the probe learned)")
        high = [ATTRIBUTION_TITLES.get(m, m) for m, v in means.items() if finite(v.get("randomisation_spearman"))
                and v["randomisation_spearman"] > 0.8]
        if high:
            text += (f"; {join_words(high)} keep{'s' if len(high) == 1 else ''} most of {'its' if len(high) == 1 else 'their'} "
                     f"ranking under randomisation, so much of {'that map' if len(high) == 1 else 'each map'} comes "
                     "from the encoder and the input, "
                     "not from what the probe learned")
    main = next((m for m in ("integrated_gradients", "gradient_shap", "input_x_gradient", "saliency")
                 if (means.get(m) or {}).get("band_fractions")), None)
    if main:
        bands = means[main]["band_fractions"]
        text += (f". Of the {ATTRIBUTION_TITLES[main]} mass, {pct(bands['low'], 0)} lies in the lowest third of the "
                 f"frequency bands, {pct(bands['mid'], 0)} in the middle and {pct(bands['high'], 0)} in the top third")
    errors = [v["error"] for v in means.values() if v.get("error")]
    if errors:
        text += f". {errors[0]}"
    return text + "."


def attribution_section(entries: list[dict], figures: dict[str, Path], out: Path) -> list[str]:
    parts = ["### Input attribution", bullets([s for e in entries if (s := attribution_sentence(e))])]
    captions = {attribution_figure_name(e): f"{e['encoder']} / {e['task']}: |attribution| of the best layer's probe "
                                            f"over the input features of {e['utterances'][0]['utterance']} "
                                            "(one panel per method)"
                for e in entries if e.get("utterances")}
    block = figures_block([*captions], figures, out, captions)
    if block:
        parts.append(block)
    return parts
