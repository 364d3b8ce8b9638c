"""The ablation study."""
