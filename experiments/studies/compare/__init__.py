"""The checkpoint comparison: two checkpoints of one architecture, layer by layer (weights, CKA, probe accuracy)."""
