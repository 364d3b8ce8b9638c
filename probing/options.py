"""How a probe is trained, apart from its penalty: the one object every probing function takes for it.

Public API
----------
- :class:`TrainingOptions` - the nine training options of :class:`probing.probe.ElasticNetProbe`
  (``max_epochs``, ``batch_size``, ``lr``, ``patience``, ``min_delta``, ``seed``, ``neurox_loss``,
  ``accelerator``, ``device``) as a frozen value, with the probe's defaults (the probe takes its defaults
  from here).
- :data:`TRAINING_PARAMS` - their names, in order.
- :data:`ACCELERATORS` - the accelerator names ``accelerator`` takes (Lightning's).

Why one object: the same settings were passed as loose keyword arguments and as ``probe_params``
mappings that held l1 and l2 in some functions and not in others. The penalty ``(l1, l2)`` is never an
option here: it is what a sweep chooses from a grid, so it stays a separate, explicit argument.

``accelerator`` and ``device`` say *where* a probe bank trains (Lightning's accelerator, and which one of
its devices: a bank trains on exactly one, see :mod:`probing.training`), not *what* it computes: the same
batches in the same order and the same updates, so a probe trained on a GPU equals the CPU's up to float
rounding (reduction order), far below any difference a result reports. So they are no part of a run's
cache keys, which say what a result was computed from: a run resumed on another machine, with or without a
GPU, reuses its finished units rather than recomputing them for a change of hardware (the seven other
options change what is computed, and are).

A leaf module (no imports from the package, no torch): the training engine (:mod:`probing.training`), which
:mod:`probing.probe` imports, reads its defaults from here, and the experiments build options from a config
without loading torch. So an unfitted probe is ``ElasticNetProbe(l1, l2, **options.as_dict())`` rather than
a method here: that method would import the probe, a cycle.
"""
from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping, Optional, Union

__all__ = ["ACCELERATORS", "TRAINING_PARAMS", "TrainingOptions"]

#: Lightning's accelerator names that ``TrainingOptions.accelerator`` takes ("auto": a GPU where there is one,
#: else the CPU; "gpu": CUDA or MPS, whichever this machine has).
ACCELERATORS: tuple[str, ...] = ("auto", "cpu", "gpu", "cuda", "mps")


@dataclass(frozen=True)
class TrainingOptions:
    """The training options of an :class:`~probing.probe.ElasticNetProbe` (everything but ``l1``, ``l2``).

    ``max_epochs``: epochs at most; ``batch_size``: rows per Adam step (None: full batch); ``lr``: Adam's
    learning rate; ``patience``: epochs without improvement before early stopping (None: none, the last
    epoch's weights); ``min_delta``: how much an epoch must lower the best validation loss to count;
    ``seed``: batch order and the validation hold-out; ``neurox_loss``: NeuroX's penalty form;
    ``accelerator``: where to train, one of :data:`ACCELERATORS` ("auto": a GPU where there is one);
    ``device``: which device of that accelerator (None: its first; a bank trains on one device). See the
    probe's docstring for why these defaults.
    """

    max_epochs: int = 100
    batch_size: Optional[int] = 64
    lr: float = 3e-3
    patience: Optional[int] = 5
    min_delta: float = 3e-3
    seed: int = 0
    neurox_loss: bool = False
    accelerator: str = "auto"
    device: Optional[int] = None

    def __post_init__(self) -> None:
        # Only the placement is checked here (its errors would otherwise come from deep inside Lightning);
        # the other options are checked where a probe is fitted.
        if not isinstance(self.accelerator, str) or self.accelerator not in ACCELERATORS:
            raise ValueError(f"unknown accelerator {self.accelerator!r}; known: {', '.join(ACCELERATORS)}")
        if self.device is not None:
            if isinstance(self.device, bool) or not isinstance(self.device, numbers.Integral):
                raise ValueError(f"device must be a device index (an int >= 0) or None, got {self.device!r}")
            if self.device < 0:
                raise ValueError(f"device must be a device index >= 0 (or None: the accelerator's first), "
                                 f"got {self.device}")
            object.__setattr__(self, "device", int(self.device))  # a numpy integer becomes a plain, JSON-able int

    @classmethod
    def coerce(cls, options: Union["TrainingOptions", Mapping[str, Any], None]) -> "TrainingOptions":
        """``options`` as a TrainingOptions: None gives the defaults; a mapping of some of the nine options
        (a config section, a JSON record) fills in the rest from the defaults. Anything else, and any other
        key (l1 and l2 included: they are separate arguments), is a ValueError."""
        if options is None:
            return cls()
        if isinstance(options, cls):
            return options
        if not isinstance(options, Mapping):
            raise ValueError(f"options must be a TrainingOptions or a mapping of {', '.join(TRAINING_PARAMS)}; "
                             f"got {type(options).__name__}")
        unknown = sorted(set(options) - set(TRAINING_PARAMS))
        if unknown:
            penalty = " (l1 and l2 are separate arguments, not training options)" if {"l1", "l2"} & set(unknown) else ""
            raise ValueError(f"unknown training option(s) {', '.join(map(repr, unknown))}{penalty}; "
                             f"known: {', '.join(TRAINING_PARAMS)}")
        return cls(**options)

    @classmethod
    def from_probe(cls, probe: Any) -> "TrainingOptions":
        """The options a probe was (or will be) trained with, from its ``get_params()`` (an option it does not
        report keeps its default): what a retrained copy of the probe takes over."""
        get_params = getattr(probe, "get_params", None)
        if get_params is None:
            raise ValueError("the training options of a probe are read from its get_params(); "
                             f"{type(probe).__name__} has none")
        params = get_params()
        return cls(**{name: params[name] for name in TRAINING_PARAMS if name in params})

    def replace(self, **changes: Any) -> "TrainingOptions":
        """A copy with ``changes`` (training options only; l1 and l2 are not among them)."""
        unknown = sorted(set(changes) - set(TRAINING_PARAMS))
        if unknown:
            raise ValueError(f"unknown training option(s) {', '.join(map(repr, unknown))}; known: {', '.join(TRAINING_PARAMS)}")
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The nine options by name, in order: plain JSON values, and the keyword arguments of an unfitted probe
        (``ElasticNetProbe(l1, l2, **options.as_dict())``)."""
        return asdict(self)


#: The names of the training options, in order (the ElasticNetProbe parameters besides l1 and l2).
TRAINING_PARAMS: tuple[str, ...] = tuple(f.name for f in fields(TrainingOptions))
