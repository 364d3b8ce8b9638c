"""The gradnap study."""
