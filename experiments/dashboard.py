"""Log one experiment run (config, per-layer metrics, tables, figures) to the dashboards picked with `--logger`.

The backends are Lightning's loggers, so the files look like any Lightning run's and no format is ours to
maintain. W&B logs offline unless `WANDB_MODE` says otherwise (nothing here contacts a server); an offline run
is uploaded later with `wandb sync <dir>`: `close()` returns that command under the key "wandb_sync".

Where each backend writes, under `log_dir` (e.g. `<run dir>/logs`):
    csv          csv/metrics.csv, csv/hparams.yaml, csv/tables/<name>.csv
    wandb        wandb/offline-run-<time>-<id>/ (the .wandb transaction log and files/media/)
    tensorboard  tensorboard/ (event file and hparams.yaml)
"""
from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import math
import os
import re
import shutil
from pathlib import Path
from types import TracebackType
from typing import Any, Mapping, Sequence

from speechprobe.experiments.config import LOGGER_NAMES as LOGGERS
from speechprobe.io import write_atomically

WANDB_PROJECT = "speechprobe"
# Lightning's WandbLogger puts the step under this key; charts use it as their x-axis (the layer index).
WANDB_STEP_KEY = "trainer/global_step"
_WANDB_MODES = ("offline", "online", "disabled", "dryrun", "run", "shared")
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")


def _tensorboard_available() -> bool:
    """Lightning's TensorBoardLogger writes with either package; checked up front so no run starts without it."""
    for name in ("tensorboard", "tensorboardX"):
        try:
            if importlib.util.find_spec(name) is not None:
                return True
        except (ImportError, ValueError):  # a broken or stubbed-out module counts as missing
            pass
    return False


def parse_loggers(text: str | Sequence[str]) -> tuple[str, ...]:
    """`"csv,wandb"` -> `("csv", "wandb")`, `"none"` -> `()`: checked before a run starts, so a typo costs nothing."""
    parts = [text] if isinstance(text, str) else list(text)
    names: list[str] = []
    for part in parts:
        for name in str(part).split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name not in LOGGERS:
                raise ValueError(f"unknown logger {name!r}: choose from {', '.join(LOGGERS)} (comma-separated)")
            if name not in names:
                names.append(name)
    if not names:
        raise ValueError(f"no logger given: choose from {', '.join(LOGGERS)} ('none' logs nothing)")
    if "none" in names:
        if len(names) > 1:
            raise ValueError(f"logger 'none' cannot be combined with others: got {','.join(names)}")
        return ()
    if "tensorboard" in names and not _tensorboard_available():
        raise ValueError("logger 'tensorboard' needs the tensorboardX or tensorboard package: pip install tensorboardX")
    return tuple(names)


def _plain(value: Any) -> Any:
    """Config values as JSON/YAML types (Paths and tuples included), so every backend stores the same thing."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            return _plain(value.item())
        except (TypeError, ValueError):
            pass
    return str(value)


def _metric_value(key: str, value: Any) -> float | None:
    """A float, or None for a missing/NaN value (a layer a probe could not score is skipped, not logged as 0)."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"metric {key!r} is not a number: {value!r}") from None
    return None if math.isnan(number) else number


def _write_csv_atomically(path: Path, rows: Sequence[Mapping[str, Any]], columns: list[str]) -> None:
    """Temp file then rename: a reader (or a crash) never sees half a table."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({column: "" if row.get(column) is None else row.get(column) for column in columns})

    write_atomically(path, write)


def _markdown_table(rows: Sequence[Mapping[str, Any]], columns: list[str]) -> str:
    """TensorBoard's text plugin renders markdown, so a table shows as a table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join("" if row.get(c) is None else str(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


class Dashboard:
    """One run's logging to every chosen backend; use as a context manager so W&B's service always shuts down."""

    _open_wandb_runs = 0  # wandb's service process is shared by the runs of one interpreter: stop it after the last

    def __init__(self, loggers: Sequence[str], log_dir: Path, run_name: str, config: Mapping[str, Any]) -> None:
        self.loggers = parse_loggers(loggers)
        self.log_dir = Path(log_dir)
        self.run_name = run_name
        self._csv: Any = None
        self._wandb: Any = None
        self._wandb_run: Any = None
        self._tensorboard: Any = None
        self._csv_rows = 0
        self._closed = False
        self._paths: dict[str, str] = {}
        params = _plain(dict(config))
        wandb_mode = _wandb_mode() if "wandb" in self.loggers else "disabled"  # checked before anything is written
        try:
            if "csv" in self.loggers:
                self._open_csv(params)
            if "wandb" in self.loggers:
                self._open_wandb(params, wandb_mode)
            if "tensorboard" in self.loggers:
                self._open_tensorboard(params)
        except BaseException:
            self.close(failed=True)
            raise

    def _open_csv(self, params: dict[str, Any]) -> None:
        from pytorch_lightning.loggers import CSVLogger

        # version="" puts the files straight into log_dir/csv instead of log_dir/csv/version_N. A rerun
        # logs every number again, so the previous files are replaced (Lightning would warn, then do the same).
        shutil.rmtree(Path(self.log_dir) / "csv", ignore_errors=True)
        self._csv = CSVLogger(save_dir=self.log_dir, name="csv", version="")
        self._csv.log_hyperparams(params)
        self._paths["csv"] = str(Path(self._csv.log_dir) / "metrics.csv")

    def _open_wandb(self, params: dict[str, Any], mode: str) -> None:
        import wandb
        from pytorch_lightning.loggers import WandbLogger

        saved = {key: value for key, value in os.environ.items() if key.startswith("WANDB_")}
        # Silent and local: no console capture, no git/system probing (the stats sampler may query cloud
        # metadata endpoints such as 169.254.169.254). WANDB_MODE, when set, wins; otherwise offline.
        settings = wandb.Settings(
            silent=True,
            console="off",
            disable_git=True,
            save_code=False,
            x_disable_stats=True,
            x_disable_machine_info=True,
            x_disable_meta=True,
        )
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            # Our own wandb.init rather than WandbLogger(offline=True): that one sets WANDB_MODE for good and
            # passes `anonymous`, which prints a deprecation warning.
            run = wandb.init(
                project=WANDB_PROJECT,
                name=self.run_name,
                dir=str(self.log_dir),
                mode=mode,
                settings=settings,
                reinit="create_new",
            )
        finally:
            _restore_wandb_env(saved)
        self._wandb_run = run
        Dashboard._open_wandb_runs += 1
        run.define_metric(WANDB_STEP_KEY)
        run.define_metric("*", step_metric=WANDB_STEP_KEY, step_sync=True)
        self._wandb = WandbLogger(experiment=run, project=WANDB_PROJECT)
        self._wandb.log_hyperparams(params)
        if run.settings.mode != "disabled":  # WANDB_MODE=disabled: a no-op run whose `dir` names a folder never written
            run_dir = Path(run.dir).parent
            self._paths["wandb"] = str(run_dir)
            if run.settings.mode in ("offline", "dryrun"):
                self._paths["wandb_sync"] = f"wandb sync {run_dir}"

    def _open_tensorboard(self, params: dict[str, Any]) -> None:
        from pytorch_lightning.loggers import TensorBoardLogger

        self._tensorboard = TensorBoardLogger(
            save_dir=self.log_dir, name="tensorboard", version="", default_hp_metric=False
        )
        self._tensorboard.log_hyperparams(params)
        text = json.dumps(params, indent=2, sort_keys=True)
        self._tensorboard.experiment.add_text("config", "```\n" + text + "\n```")
        self._paths["tensorboard"] = str(Path(self._tensorboard.log_dir))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Scalars at one step (the layer index in a sweep); written through at once so a crash keeps them."""
        self._check_open()
        values = {key: _metric_value(key, value) for key, value in metrics.items()}
        clean = {key: value for key, value in values.items() if value is not None}
        if not clean:
            return
        if self._csv is not None:
            self._csv.log_metrics(clean, step=self._csv_rows if step is None else step)
            self._csv.save()
            self._csv_rows += 1
        if self._wandb is not None:
            self._wandb.log_metrics(clean, step=step)
        if self._tensorboard is not None:
            self._tensorboard.log_metrics(clean, step=step)

    def log_table(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """A ranking or summary table; `name` may use `/` to group (`sweep/ge2e`), which becomes folders in csv."""
        self._check_open()
        if not _TABLE_NAME.fullmatch(name) or ".." in name.split("/"):
            raise ValueError(f"table name {name!r} must be letters, digits, _ . - with optional / between parts")
        plain_rows = [_plain(dict(row)) for row in rows]
        columns: list[str] = []
        for row in plain_rows:
            columns += [key for key in row if key not in columns]
        if self._csv is not None:
            _write_csv_atomically(Path(self._csv.log_dir) / "tables" / f"{name}.csv", plain_rows, columns)
        if not columns:
            return
        data = [[row.get(column) for column in columns] for row in plain_rows]
        if self._wandb is not None:
            self._wandb.log_table(key=name, columns=columns, data=data)
        if self._tensorboard is not None:
            self._tensorboard.experiment.add_text(name, _markdown_table(plain_rows, columns))

    def log_figure(self, name: str, path: Path) -> None:
        """A PNG already saved in the run's figures/ folder; csv keeps nothing (the file is there already)."""
        self._check_open()
        path = Path(path)
        if path.suffix.lower() != ".png" or not path.is_file():
            raise ValueError(f"figure {str(path)!r} is not an existing .png file")
        if self._wandb is not None:
            self._wandb.log_image(key=name, images=[str(path)])
        if self._tensorboard is not None:
            from matplotlib.image import imread

            self._tensorboard.experiment.add_image(name, imread(str(path)), dataformats="HWC")

    def close(self, failed: bool = False) -> dict[str, str]:
        """Finish every backend; returns {backend: where it wrote} plus "wandb_sync", the command to upload later."""
        if self._closed:
            return dict(self._paths)
        self._closed = True
        status = "failed" if failed else "success"
        errors: list[BaseException] = []
        for logger in (self._csv, self._tensorboard):
            if logger is not None:
                try:
                    logger.finalize(status)
                except Exception as error:  # finish the others first, then report
                    errors.append(error)
        if self._wandb_run is not None:
            saved = {key: value for key, value in os.environ.items() if key.startswith("WANDB_")}
            try:
                self._wandb_run.finish(exit_code=1 if failed else 0)
            except Exception as error:
                errors.append(error)
            finally:
                Dashboard._open_wandb_runs -= 1
                if Dashboard._open_wandb_runs == 0:
                    import wandb

                    wandb.teardown()  # stops the wandb-core service process instead of leaving it to atexit
                _restore_wandb_env(saved)
        if errors:
            raise errors[0]
        return dict(self._paths)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"dashboard for run {self.run_name!r} is closed")

    def __enter__(self) -> Dashboard:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close(failed=kind is not None)


def _wandb_mode() -> str:
    """WANDB_MODE if the user set one, else offline; passed explicitly because wandb reads the variable only once
    per process (when its service starts), so a later change would otherwise be ignored."""
    mode = os.environ.get("WANDB_MODE", "").strip() or "offline"
    if mode not in _WANDB_MODES:
        raise ValueError(f"WANDB_MODE={mode!r} is not one of {', '.join(_WANDB_MODES)}")
    return mode


def _restore_wandb_env(saved: Mapping[str, str]) -> None:
    """wandb may set WANDB_* variables while it runs; put them back so later runs see what the user set."""
    for key in [key for key in os.environ if key.startswith("WANDB_")]:
        if key not in saved:
            del os.environ[key]
    os.environ.update(saved)
