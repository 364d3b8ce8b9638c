"""TrainingOptions: one frozen value for the nine training options, with the probe's defaults."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from speechprobe.probing.options import TRAINING_PARAMS, TrainingOptions
from speechprobe.probing.probe import ElasticNetProbe


def test_the_probe_takes_its_defaults_from_the_options():
    params = ElasticNetProbe().get_params()
    assert TrainingOptions().as_dict() == {name: params[name] for name in TRAINING_PARAMS}
    assert set(params) == {"l1", "l2", *TRAINING_PARAMS}
    assert list(TrainingOptions().as_dict()) == list(TRAINING_PARAMS)


def test_from_probe_reads_the_training_options_but_not_the_penalty():
    probe = ElasticNetProbe(1e-3, 1e-4, max_epochs=7, batch_size=None, seed=3, neurox_loss=True)
    options = TrainingOptions.from_probe(probe)
    assert options == TrainingOptions(max_epochs=7, batch_size=None, seed=3, neurox_loss=True)
    again = ElasticNetProbe(probe.l1, probe.l2, **options.as_dict())
    assert again.get_params() == probe.get_params()
    with pytest.raises(ValueError, match="get_params"):
        TrainingOptions.from_probe(object())


def test_coerce_takes_none_options_or_a_mapping_of_some_options():
    assert TrainingOptions.coerce(None) == TrainingOptions()
    options = TrainingOptions(lr=0.1)
    assert TrainingOptions.coerce(options) is options
    assert TrainingOptions.coerce({"max_epochs": 5}) == TrainingOptions(max_epochs=5)
    with pytest.raises(ValueError, match="unknown training option.*'alpha'"):
        TrainingOptions.coerce({"alpha": 1.0})
    with pytest.raises(ValueError, match="l1 and l2 are separate arguments"):
        TrainingOptions.coerce({"l1": 1e-3, "max_epochs": 5})
    with pytest.raises(ValueError, match="must be a TrainingOptions or a mapping"):
        TrainingOptions.coerce([("lr", 0.1)])


def test_options_are_frozen_and_replace_makes_a_copy():
    options = TrainingOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.lr = 1.0  # type: ignore[misc]
    changed = options.replace(max_epochs=3)
    assert changed.max_epochs == 3 and options.max_epochs == 100
    with pytest.raises(ValueError, match="unknown training option"):
        options.replace(l1=1e-3)
    assert hash(changed) == hash(TrainingOptions(max_epochs=3))


def test_a_fitted_probe_equals_one_fitted_with_its_options():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 6))
    y = (X[:, 0] > 0).astype(int)
    options = TrainingOptions(max_epochs=5, batch_size=32, seed=2)
    a = ElasticNetProbe(1e-3, 0.0, **options.as_dict()).fit(X, y)
    from speechprobe.probing.probe import fit_probes

    (b,) = fit_probes(X, y, None, None, [(1e-3, 0.0)], options=options)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    assert b.get_params() == a.get_params()


def test_the_placement_options_come_last_with_their_defaults():
    assert TRAINING_PARAMS[-2:] == ("accelerator", "device")
    assert TRAINING_PARAMS[:7] == ("max_epochs", "batch_size", "lr", "patience", "min_delta", "seed", "neurox_loss")
    options = TrainingOptions()
    assert (options.accelerator, options.device) == ("auto", None)
    # the saved-probe checks read the options' declared types: exactly these two
    types = {f.name: str(f.type) for f in dataclasses.fields(TrainingOptions)}
    assert (types["accelerator"], types["device"]) == ("str", "Optional[int]")
    params = ElasticNetProbe(accelerator="cpu", device=0).get_params()
    assert (params["accelerator"], params["device"]) == ("cpu", 0)


def test_coerce_takes_the_placement_options_from_a_mapping():
    assert TrainingOptions.coerce({"accelerator": "gpu", "device": 1}) == TrainingOptions(accelerator="gpu", device=1)
    options = TrainingOptions.coerce({"accelerator": "cpu"})
    assert options.accelerator == "cpu" and options.device is None and options.max_epochs == 100
    again = TrainingOptions.coerce(json.loads(json.dumps(TrainingOptions(accelerator="cuda", device=2).as_dict())))
    assert again == TrainingOptions(accelerator="cuda", device=2)
    numpy_index = TrainingOptions(device=np.int64(3))  # a numpy integer is kept as a plain int
    assert type(numpy_index.device) is int and numpy_index == TrainingOptions(device=3)
    assert TrainingOptions().replace(accelerator="mps").accelerator == "mps"


@pytest.mark.parametrize("changes, message", [
    ({"accelerator": "tpu"}, "unknown accelerator 'tpu'; known: auto, cpu, gpu, cuda, mps"),
    ({"accelerator": "GPU"}, "unknown accelerator 'GPU'"),
    ({"accelerator": None}, "unknown accelerator None"),
    ({"device": -1}, "device must be a device index >= 0.*got -1"),
    ({"device": 1.0}, "device must be a device index .*got 1.0"),
    ({"device": True}, "device must be a device index .*got True"),
    ({"device": "0"}, "device must be a device index .*got '0'"),
])
def test_the_placement_options_are_checked(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainingOptions(**changes)
    with pytest.raises(ValueError, match=message):
        TrainingOptions.coerce(changes)
    with pytest.raises(ValueError, match=message):
        TrainingOptions().replace(**changes)
