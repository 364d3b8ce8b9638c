"""Probes, neuron rankings, minimal subsets and ablation on plain N x D arrays (no audio, no models)."""
