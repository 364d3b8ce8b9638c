"""Frozen speech encoders: read audio, give every layer's representations; never train a probe."""
