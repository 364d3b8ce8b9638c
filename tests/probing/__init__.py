"""Probes, rankings, subsets and metrics on plain arrays."""
