"""Compose tasks, encoders and probing into the studies users run; owns the CLI, reports and logging."""
