"""Dashboard logging: --logger parsing, the csv files, and an offline W&B run read back from its own files."""
from __future__ import annotations

import csv
import importlib.machinery
import json
import math
import os
import struct
import sys
import types
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from speechprobe.experiments import dashboard
from speechprobe.experiments.config import DEFAULT_LOGGERS, LOGGER_NAMES as LOGGERS
from speechprobe.experiments.dashboard import Dashboard, parse_loggers

CONFIG = {"encoder": "ge2e", "seed": 3, "probe": {"kind": "linear", "l1": 0.01}, "corpus": Path("/data/tiny")}


@pytest.fixture
def tensorboard_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A None entry in sys.modules makes find_spec report the package as absent."""
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "tensorboardX", None)


@pytest.fixture
def wandb_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every place wandb could write (home, cache, data, config, CWD) moved under tmp_path; returns the CWD."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    for key in [key for key in os.environ if key.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(home / ".config" / "wandb"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(home / ".cache" / "wandb"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(home / ".local" / "share" / "wandb"))
    monkeypatch.chdir(cwd)
    return cwd


def test_parse_loggers_valid_lists() -> None:
    assert LOGGERS == ("none", "csv", "wandb", "tensorboard")
    assert DEFAULT_LOGGERS == ("csv", "wandb")
    assert parse_loggers("csv,wandb") == ("csv", "wandb")
    assert parse_loggers(" wandb , CSV ") == ("wandb", "csv")
    assert parse_loggers("csv,csv,wandb,csv") == ("csv", "wandb")
    assert parse_loggers(["csv", "wandb"]) == ("csv", "wandb")
    assert parse_loggers("none") == ()
    assert parse_loggers(["none"]) == ()


def test_parse_loggers_rejects_unknown_name_listing_valid_ones() -> None:
    with pytest.raises(ValueError, match="'mlflow'") as error:
        parse_loggers("csv,mlflow")
    for name in LOGGERS:
        assert name in str(error.value)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="no logger"):
        parse_loggers(" , ")


def test_parse_loggers_rejects_none_with_others() -> None:
    with pytest.raises(ValueError, match="'none' cannot be combined"):
        parse_loggers("none,csv")


def test_parse_loggers_tensorboard_missing_names_package(tensorboard_missing: None, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pip install tensorboard"):
        parse_loggers("csv,tensorboard")
    # The Dashboard checks too, before writing anything.
    with pytest.raises(ValueError, match="pip install tensorboard"):
        Dashboard(["csv", "tensorboard"], tmp_path / "logs", "run", CONFIG)
    assert not (tmp_path / "logs").exists()


def test_parse_loggers_tensorboard_present(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("tensorboard")
    fake.__spec__ = importlib.machinery.ModuleSpec("tensorboard", None)
    monkeypatch.setitem(sys.modules, "tensorboard", fake)
    assert parse_loggers("tensorboard,csv") == ("tensorboard", "csv")


def test_csv_metrics_hparams_and_tables(tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    with Dashboard(["csv"], log_dir, "sweep-ge2e", CONFIG) as board:
        for layer, accuracy in enumerate([0.5, 0.75, 0.95]):
            board.log_metrics(
                {"sweep/ge2e/gender/accuracy": accuracy, "sweep/ge2e/gender/selectivity": float("nan"), "x": None},
                step=layer,
            )
        board.log_metrics({"sweep/ge2e/age/r2": 0.25}, step=1)  # a new column after rows were written
        rows = [{"neuron": 7, "weight": 0.5}, {"neuron": 3, "weight": -0.25, "note": "late column"}]
        board.log_table("sweep/ranking", rows)
        board.log_figure("ignored", _png(tmp_path / "f.png"))  # csv keeps no figures
        paths = board.close()
    assert paths == {"csv": str(log_dir / "csv" / "metrics.csv")}
    assert board.close() == paths  # idempotent

    with open(log_dir / "csv" / "metrics.csv", newline="") as file:
        metrics = list(csv.DictReader(file))
    assert [(row["step"], row["sweep/ge2e/gender/accuracy"]) for row in metrics[:3]] == [
        ("0", "0.5"), ("1", "0.75"), ("2", "0.95")
    ]
    assert metrics[3]["sweep/ge2e/age/r2"] == "0.25" and metrics[3]["step"] == "1"
    assert "sweep/ge2e/gender/selectivity" not in metrics[0] and "x" not in metrics[0]  # NaN / None skipped

    hparams = yaml.safe_load((log_dir / "csv" / "hparams.yaml").read_text())
    assert hparams == {"encoder": "ge2e", "seed": 3, "probe": {"kind": "linear", "l1": 0.01}, "corpus": "/data/tiny"}

    table = log_dir / "csv" / "tables" / "sweep" / "ranking.csv"
    with open(table, newline="") as file:
        assert list(csv.DictReader(file)) == [
            {"neuron": "7", "weight": "0.5", "note": ""},
            {"neuron": "3", "weight": "-0.25", "note": "late column"},
        ]
    assert [p.name for p in table.parent.iterdir()] == ["ranking.csv"]  # no temp file left behind


def test_bad_input_is_one_line_value_error(tmp_path: Path) -> None:
    with Dashboard(["csv"], tmp_path / "logs", "run", {}) as board:
        with pytest.raises(ValueError, match="'acc' is not a number"):
            board.log_metrics({"acc": "high"})
        with pytest.raises(ValueError, match="'../escape'"):
            board.log_table("../escape", [{"a": 1}])
        with pytest.raises(ValueError, match="missing.png"):
            board.log_figure("fig", tmp_path / "missing.png")
    with pytest.raises(ValueError, match="closed"):
        board.log_metrics({"acc": 1.0})


def test_none_logs_nothing(tmp_path: Path) -> None:
    with Dashboard(["none"], tmp_path / "logs", "run", CONFIG) as board:
        board.log_metrics({"acc": 1.0}, step=0)
        board.log_table("t", [{"a": 1}])
    assert board.close() == {}
    assert not (tmp_path / "logs").exists()


def test_wandb_offline_run_holds_metrics_config_table_and_image(tmp_path: Path, wandb_sandbox: Path) -> None:
    log_dir = tmp_path / "logs"
    environ_before = dict(os.environ)
    with Dashboard(["csv", "wandb"], log_dir, "sweep-ge2e", CONFIG) as board:
        for layer, accuracy in enumerate([0.5, 0.75, 0.95]):
            board.log_metrics({"sweep/ge2e/gender/accuracy": accuracy, "skipped": float("nan")}, step=layer)
        board.log_table("ranking", [{"neuron": 7, "weight": 0.5}, {"neuron": 3, "weight": -0.25}])
        board.log_figure("layer_curve", _png(tmp_path / "curve.png"))
    paths = board.close()

    run_dir = Path(paths["wandb"])
    assert run_dir.parent == log_dir / "wandb" and run_dir.name.startswith("offline-run-")
    assert paths["wandb_sync"] == f"wandb sync {run_dir}"
    assert dict(os.environ) == environ_before  # no WANDB_MODE or other leftovers

    records = list(_wandb_records(next(run_dir.glob("run-*.wandb"))))
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert (run.project, run.display_name) == ("speechprobe", "sweep-ge2e")
    config: dict[str, Any] = {}
    for record in records:
        if record.WhichOneof("record_type") == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
    assert {key: config[key] for key in CONFIG} == {**CONFIG, "corpus": "/data/tiny"}

    history = [_items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
    accuracy = [(h["trainer/global_step"], h["sweep/ge2e/gender/accuracy"]) for h in history if "sweep/ge2e/gender/accuracy" in h]
    assert accuracy == [(0, 0.5), (1, 0.75), (2, 0.95)]
    assert not any("skipped" in h for h in history)

    table_row = next(h for h in history if "ranking/path" in h)
    table = json.loads((run_dir / "files" / table_row["ranking/path"]).read_text())
    assert table["columns"] == ["neuron", "weight"] and table["data"] == [[7, 0.5], [3, -0.25]]
    image_row = next(h for h in history if "layer_curve/filenames" in h)
    assert (image_row["layer_curve/width"], image_row["layer_curve/height"]) == (4, 3)
    assert (run_dir / "files" / image_row["layer_curve/filenames"][0]).is_file()

    # close() stopped wandb's service process (wandb-core) instead of leaving it running until exit.
    assert _live_children() == []

    # Nothing outside log_dir but the sandboxed home's wandb cache/staging folders.
    assert not (wandb_sandbox / "wandb").exists() and list(wandb_sandbox.iterdir()) == []
    assert not (tmp_path / "home" / ".config" / "wandb").exists()
    assert not [p for p in Path.home().glob("*") if p.name == "wandb"]


def test_wandb_respects_wandb_mode_and_restores_it(tmp_path: Path, wandb_sandbox: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with Dashboard(["wandb"], tmp_path / "logs", "run", CONFIG) as board:
        board.log_metrics({"acc": 1.0}, step=0)
    assert board.close() == {}  # a disabled run writes nothing, so it names no folder
    assert not (tmp_path / "logs" / "wandb").exists()
    assert os.environ["WANDB_MODE"] == "disabled"


def test_bad_wandb_mode_is_rejected_before_writing(tmp_path: Path, wandb_sandbox: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "ofline")
    with pytest.raises(ValueError, match="WANDB_MODE='ofline'"):
        Dashboard(["wandb"], tmp_path / "logs", "run", CONFIG)
    assert not (tmp_path / "logs").exists()


def _png(path: Path) -> Path:
    """A 4x3 PNG written with matplotlib (installed with the project)."""
    import numpy as np
    from matplotlib.image import imsave

    imsave(path, np.linspace(0, 1, 12).reshape(3, 4))
    return path


def _live_children() -> list[str]:
    """Command lines of this process's children still running (zombies, already exited, not counted), apart from
    Python's own multiprocessing helpers (a forkserver and its resource tracker stay for the process's life once a
    corpus was synthesised with threads running: `tasks.synthetic.start_method`)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and "from multiprocessing." not in cmdline:
            children.append(cmdline)
    return children


def _items(items: Any) -> dict[str, Any]:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


def _wandb_records(path: Path) -> Iterator[Any]:
    """Records of a .wandb transaction log (LevelDB log format: 32 KiB blocks of checksum, length, type, data).

    wandb 0.31 no longer ships a Python reader (wandb.sdk.internal.datastore is gone; the Go wandb-core writes the
    file) and offline runs write no wandb-summary.json, so this is the only way to see what was logged.
    """
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb transaction log"
    block, position, pending = 32768, 7, b""
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # block trailer padding
            position += left
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0:
            break
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk  # 1 full, 2 first, 3 middle, 4 last
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def test_metric_value_skips_nan() -> None:
    assert dashboard._metric_value("a", float("nan")) is None
    assert dashboard._metric_value("a", None) is None
    assert math.isclose(dashboard._metric_value("a", 0.5) or 0.0, 0.5)


def _tensorboard_events(folder: Path) -> list[Any]:
    """Every Event in a folder's event files, read as TFRecords (length, CRC, payload, CRC)."""
    from tensorboardX.proto import event_pb2

    events = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            events.append(event_pb2.Event.FromString(data[offset + 12:offset + 12 + length]))
            offset += 12 + length + 4
    return events


def test_tensorboard_event_file_holds_metrics_config_table_and_image(tmp_path: Path) -> None:
    pytest.importorskip("tensorboardX")  # in the dev extra; `pip install speechprobe[tensorboard]` for users
    log_dir = tmp_path / "logs"
    with Dashboard(["tensorboard"], log_dir, "run", CONFIG) as board:
        board.log_metrics({"sweep/acc": 0.5, "nan": float("nan")}, step=2)
        board.log_table("ranking", [{"neuron": 7, "weight": 0.5}])
        board.log_figure("curve", _png(tmp_path / "curve.png"))
    assert board.close() == {"tensorboard": str(log_dir / "tensorboard")}
    values = [(event.step, value) for event in _tensorboard_events(log_dir / "tensorboard")
              for value in event.summary.value]
    scalars = {(step, v.tag): v.simple_value for step, v in values if v.HasField("simple_value")}
    assert scalars == {(2, "sweep/acc"): 0.5}  # the NaN is left out
    texts = {v.tag: v.tensor.string_val[0].decode() for _, v in values if v.tensor.string_val}
    assert '"encoder": "ge2e"' in texts["config/text_summary"]
    assert "| neuron | weight |" in texts["ranking/text_summary"] and "| 7 | 0.5 |" in texts["ranking/text_summary"]
    images = {v.tag: v.image for _, v in values if v.HasField("image")}
    assert (images["curve"].height, images["curve"].width) == (3, 4)  # _png: 3 rows of 4 pixels
    assert yaml.safe_load((log_dir / "tensorboard" / "hparams.yaml").read_text())["probe"] == {"kind": "linear", "l1": 0.01}
