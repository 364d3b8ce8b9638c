"""The similarity study."""
