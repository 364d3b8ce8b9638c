"""The package as a user installs it: a wheel, into a fresh virtual environment, used from elsewhere.

Our dependencies (torch, Lightning, ...) are not downloaded again: the fresh environment sees this
environment's site-packages through a `.pth` line, which Python appends to `sys.path` without running the
`.pth` files found there, so the editable install of the checkout stays invisible to it.
"""
from __future__ import annotations

import shutil
import site
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("speechprobe", "tasks", "encoders", "probing", "experiments", "setup.cfg", "pyproject.toml", "README.md")

API_EXAMPLE = textwrap.dedent("""
    import numpy as np, speechprobe
    from speechprobe import ElasticNetProbe, rank_neurons, check_ranking, minimal_subset
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    X = rng.normal(size=(300, 16)).astype(np.float32)
    X[:, 5] += 4.0 * y                                     # neuron 5 carries the label (Bayes 0.98)
    tr, va, te = slice(0, 180), slice(180, 240), slice(240, 300)
    probe = ElasticNetProbe(l1=1e-4, l2=1e-4, seed=0).fit(X[tr], y[tr], X[va], y[va])
    ranking = rank_neurons(probe, X=X[tr], y=y[tr])
    subset = minimal_subset(X[tr], y[tr], X[va], y[va], ranking)
    print(speechprobe.__file__, int(ranking[0]), subset.k, round(probe.score(X[te], y[te]), 2))
""")


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{command[:3]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Build from a copy of the sources, so the checkout gets no build/ or egg-info folder.
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out),
          str(source)], cwd=source)
    (built,) = out.glob("speechprobe-*.whl")
    return built


def test_wheel_installs_one_top_level_name(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"speechprobe", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    for folder in ("tasks", "encoders", "probing", "experiments"):   # every package and module of the checkout
        for path in (ROOT / folder).rglob("*.py"):
            if "__pycache__" not in path.parts:
                assert f"speechprobe/{path.relative_to(ROOT).as_posix()}" in names
    assert "speechprobe/__main__.py" in names
    assert "speechprobe/experiments/configs/demo.yaml" in names      # the run configs travel with the code
    assert not any("/tests/" in name or name.startswith("tests/") for name in names)


def test_wheel_in_a_fresh_environment(wheel: Path, tmp_path: Path) -> None:
    env = tmp_path / "env"
    _run([sys.executable, "-m", "venv", str(env)], cwd=tmp_path)
    python = env / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)], cwd=tmp_path)
    fresh_site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                           cwd=tmp_path).stdout.strip())
    (fresh_site / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    # A user's own `tasks.py` and `experiments/` must not shadow ours.
    (work / "tasks.py").write_text("raise SystemExit('the user tasks.py was imported')\n")
    (work / "experiments").mkdir()
    (work / "experiments" / "__init__.py").write_text("raise SystemExit('the user experiments/ was imported')\n")

    help_text = _run([str(env / "bin" / "speechprobe"), "--help"], cwd=work).stdout
    assert help_text.startswith("usage: speechprobe")
    assert "probe" in help_text and "run" in help_text
    assert _run([str(python), "-m", "speechprobe", "--help"], cwd=work).stdout == help_text

    out = _run([str(python), "-c", API_EXAMPLE], cwd=work).stdout.split()
    assert Path(out[0]).is_relative_to(fresh_site)           # the wheel's copy, not the checkout
    assert int(out[1]) == 5                                  # the planted neuron ranks first
    assert int(out[2]) <= 3 and float(out[3]) >= 0.9         # a small subset; the probe learns the label
