"""The audit study."""
