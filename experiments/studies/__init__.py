"""The studies: one folder each (computation, figures, report section, dashboard rows, command); the registry is experiments/registry.py."""
