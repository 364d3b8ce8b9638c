"""The probing layer's choice lists and defaults, importable without numpy or torch.

The single source for every list a user picks from: the config schema (`experiments.config`) builds its
types from these, and the CLI takes its `choices=` and defaults from the schema.
"""
RANKING_METHODS = ("path", "weight", "neurox", "probeless")
DEFAULT_RANKING = "path"
DATA_RANKINGS = ("path", "probeless")  # rankings that read the training features and labels, not only a probe
ABLATION_MODES = ("mean", "zero")
DEFAULT_ABLATION_MODE = "mean"
SIMILARITY_MEASURES = ("linear_cka", "rbf_cka", "svcca", "pwcca")
