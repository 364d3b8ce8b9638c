"""Topographic neuron maps: a layer's neurons on a grid where neighbours correlate, painted with what a task reads."""
