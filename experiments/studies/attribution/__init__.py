"""The attribution study."""
