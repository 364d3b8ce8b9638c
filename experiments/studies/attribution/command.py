"""`speechprobe attribute`: which input features (log-mel bins x frames, or samples) one probe decision rests on.

The encoder and a saved probe form one differentiable model (:mod:`experiments.studies.attribution.attribute`); saliency,
gradient x input, integrated gradients, GradientSHAP and (where every module has a rule) LRP attribute
the probe's logit for one class of one utterance to the encoder's input features; the model
randomisation check re-draws the probe's weights and reports, per method, the rank correlation between
the two maps. Writes DIR/attribution.json, DIR/attribution.npz (the maps) and DIR/attribution.png.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from speechprobe.errors import SpeechprobeError
from speechprobe.experiments.arguments import add_corpus_source, cmd_lazy
from speechprobe.io import write_directory

# numpy, torch and captum load only when the command runs: `speechprobe --help` stays instant

RESULTS, MAPS, FIGURE = "attribution.json", "attribution.npz", "attribution.png"
from speechprobe.experiments.config import (ATTRIBUTION_METHODS as METHOD_CHOICES, DEFAULT_ATTRIBUTION_METHODS as DEFAULT_METHODS,
                                           IG_STEPS, POOLINGS, SHAP_SAMPLES)


def probe_provenance(probe_dir: Path) -> dict[str, Any]:
    """What the folder a probe was saved in says about it: its layer and store, where known.

    `speechprobe probe` and the sweep save `probes/<layer>/` beside results.json / unit.json (with
    `probe_dirs`); `speechprobe neurons` saves `probe/` beside neurons.json (with `layer`).
    """
    probe_dir = probe_dir.resolve()
    for name in ("results.json", "unit.json"):
        path = probe_dir.parent.parent / name
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except ValueError:
                continue
            for layer, relative in (data.get("probe_dirs") or {}).items():
                if (probe_dir.parent.parent / relative).resolve() == probe_dir:
                    return {"layer": layer, "store": data.get("store"), "source": str(path)}
    path = probe_dir.parent / "neurons.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except ValueError:
            data = {}
        if data.get("layer") and data["layer"] != "all":
            return {"layer": data["layer"], "store": data.get("store"), "source": str(path)}
    return {}


def _store_path(text: str | None, base: Path) -> Path | None:
    if not text:
        return None
    path = Path(text)
    return path if path.is_absolute() or path.exists() else (base / path)


def cmd_attribute(args: argparse.Namespace) -> int:
    import numpy as np

    from speechprobe.experiments.studies.attribution.attribute import AttributionError, AttributionSettings, run_attribution
    from speechprobe.experiments.studies.attribution.figures import draw_attribution
    from speechprobe.experiments.arguments import check_out, open_store, progress
    from speechprobe.io import write_json
    from speechprobe.probing.probe import ElasticNetProbe

    out = check_out(args.out)
    methods = tuple(dict.fromkeys(args.methods or DEFAULT_METHODS))
    if args.ig_steps < 2 or args.shap_samples < 1:
        raise SpeechprobeError("--ig-steps must be at least 2 and --shap-samples at least 1")
    probe_dir = Path(args.probe)
    try:
        probe = ElasticNetProbe.load(probe_dir)
    except ValueError as error:
        raise SpeechprobeError(f"--probe {probe_dir}: {error}") from None
    provenance = probe_provenance(probe_dir)
    store = None
    store_path = Path(args.store) if args.store else _store_path(provenance.get("store"), Path.cwd())
    if store_path is not None and store_path.exists():
        store = open_store(store_path)
    elif args.store:
        raise SpeechprobeError(f"--store {args.store} does not exist")
    pooling = args.pooling or (store.manifest.get("pooling") if store is not None else None) or "mean"

    from speechprobe.encoders.registry import create_encoder

    encoder = create_encoder(args.encoder)
    layer_name = args.layer or provenance.get("layer")
    if layer_name is None:
        raise SpeechprobeError(f"--probe {probe_dir}: which layer it was trained on is not recorded beside it; "
                           f"give --layer (one of {', '.join(encoder.layer_names)})")
    if layer_name not in encoder.layer_names:
        raise SpeechprobeError(f"layer {layer_name!r} is not a layer of {encoder.name} ({', '.join(encoder.layer_names)})")
    layer = encoder.layer_names.index(layer_name)

    corpus_source = args.corpus or (store.manifest.get("corpus_source") if store is not None else None)
    if not corpus_source:
        raise SpeechprobeError("give --corpus: no store records which corpus the probe was trained on")
    from speechprobe.experiments.arguments import load_source

    corpus = load_source(args, corpus_source)
    ids = corpus.metadata["utt_id"].astype(str).tolist() if "utt_id" in corpus.metadata.columns else []
    if args.utterance not in ids:
        raise SpeechprobeError(f"--utterance {args.utterance!r} is not in {corpus_source} ({len(ids)} utterances, "
                           f"e.g. {', '.join(ids[:3])})")
    row = ids.index(args.utterance)
    classes = [str(c) for c in probe.classes_]
    target = None
    if args.target is not None:
        if args.target not in classes:
            raise SpeechprobeError(f"--target {args.target!r} is not a class of the probe ({', '.join(classes)})")
        target = classes.index(args.target)
    wave = corpus.load_audio(row, encoder.sample_rate)

    tell = progress(args) or (lambda message: None)
    if store is None and not args.pooling:
        tell("no store recorded beside the probe: assuming mean pooling (give --store or --pooling)")
    settings = AttributionSettings(methods=methods, ig_steps=args.ig_steps, shap_samples=args.shap_samples,
                                   seed=args.seed)
    import time

    started = time.perf_counter()
    try:
        result = run_attribution(encoder, layer, probe, pooling, wave, target, settings, tell)
    except AttributionError as error:
        raise SpeechprobeError(str(error)) from None
    seconds = time.perf_counter() - started

    store_check = None
    if store is not None and store.manifest.get("encoder") == encoder.name and layer_name in store.layer_names:
        store_ids = store.index["utt_id"].astype(str).tolist()
        if args.utterance in store_ids:
            vector = np.asarray(store.layer(layer_name))[store_ids.index(args.utterance)][None].astype(np.float64)
            store_check = float(np.abs(probe.predict_proba(vector)[0] - result.probabilities).max())
    labels = corpus.metadata.iloc[row].to_dict()
    results = {
        "encoder": encoder.name,
        "layer": layer_name,
        "pooling": pooling,
        "probe": str(probe_dir),
        "probe_provenance": provenance.get("source"),
        "store": str(store.path) if store is not None else None,
        "corpus": str(corpus_source),
        "utterance": args.utterance,
        "labels": {k: labels[k] for k in ("speaker", "gender", "dialect", "channel") if k in labels},
        "duration_s": len(wave) / encoder.sample_rate,
        "feature_kind": result.feature_kind,
        "feature_shape": list(result.features.shape),
        "feature_hop": result.feature_hop,
        "sample_rate": encoder.sample_rate,
        "real_frames": result.real_frames,
        "classes": classes,
        "probabilities": dict(zip(classes, result.probabilities.tolist())),
        "target": result.target_class,
        "store_probability_gap": store_check,
        "settings": {"methods": list(methods), "ig_steps": args.ig_steps, "shap_samples": args.shap_samples,
                     "seed": args.seed, "randomisation": "probe weights re-drawn, seed + 1"},
        "methods": result.summaries,
        "seconds": seconds,
    }

    def fill(tmp: Path) -> None:
        write_json(tmp / RESULTS, results)
        np.savez_compressed(tmp / MAPS, features=result.features,
                            **{f"map_{m}": v for m, v in result.maps.items()},
                            **{f"random_{m}": v for m, v in result.random_maps.items()})
        draw_attribution(results, result.features, result.maps, tmp / FIGURE)

    write_directory(out, fill)
    print(f"{encoder.name} layer {layer_name}, utterance {args.utterance}: class {result.target_class} "
          f"(p = {result.probabilities[result.target]:.3f}); {len(wave) / encoder.sample_rate:.2f} s of audio, "
          f"features {result.feature_kind} {tuple(result.features.shape)}")
    for method, summary in result.summaries.items():
        extra = ""
        if "completeness_delta" in summary:
            extra = f", completeness delta {summary['completeness_delta']:.3g}"
        bands = summary.get("band_fractions")
        where = (f", mass low/mid/high bands {bands['low']:.2f}/{bands['mid']:.2f}/{bands['high']:.2f}"
                 if bands else "")
        print(f"  {method:<22} randomisation Spearman {summary['randomisation_spearman']:.3f}{where}{extra}")
    if store_check is not None:
        print(f"model vs probe on the store vector: max probability gap {store_check:.2g}")
    print(f"wrote {out / RESULTS}, {out / MAPS} and {out / FIGURE} ({seconds:.1f} s)")
    return 0


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "attribute", help="input attribution (saliency, IG, SHAP, LRP) of a probe's decision on one utterance",
        description="Attribute a saved probe's logit for one class of one utterance to the encoder's input "
                    "features (log-mel for GE2E and Whisper, the waveform otherwise), with the model "
                    "randomisation sanity check. Writes DIR/attribution.json, DIR/attribution.npz and "
                    "DIR/attribution.png.")
    parser.add_argument("--encoder", required=True, metavar="NAME", help="the encoder the probe's store came from")
    parser.add_argument("--probe", required=True, metavar="DIR",
                        help="a saved probe folder (e.g. OUT/probes/<layer> of `speechprobe probe`)")
    parser.add_argument("--utterance", required=True, metavar="ID", help="an utt_id of the corpus")
    parser.add_argument("--corpus", metavar="SOURCE", help="default: the corpus of the probe's store")
    parser.add_argument("--store", metavar="STORE",
                        help="the probe's store (default: as recorded beside the probe); gives pooling and a check")
    parser.add_argument("--layer", metavar="LAYER", help="the probe's layer (default: as recorded beside the probe)")
    parser.add_argument("--pooling", choices=POOLINGS, help="default: the store's")
    parser.add_argument("--target", metavar="CLASS", help="the class attributed (default: the predicted one)")
    parser.add_argument("--methods", nargs="+", choices=METHOD_CHOICES, metavar="METHOD",
                        help=f"any of {', '.join(METHOD_CHOICES)} (default: all but lrp)")
    parser.add_argument("--ig-steps", type=int, default=IG_STEPS,
                        help=f"integrated-gradients steps (default {IG_STEPS}; raise it if the completeness delta is large)")
    parser.add_argument("--shap-samples", type=int, default=SHAP_SAMPLES,
                        help=f"GradientSHAP samples (default {SHAP_SAMPLES})")
    parser.add_argument("--seed", type=int, default=0, help="GradientSHAP noise and the randomised probe")
    parser.add_argument("--out", required=True, metavar="DIR", help="a new or empty folder for the results")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    add_corpus_source(parser)
    parser.set_defaults(func=cmd_lazy("speechprobe.experiments.studies.attribution.command", "cmd_attribute"))
