"""The sweep study."""
