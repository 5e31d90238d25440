"""Shared fixtures: isolated work dirs, small synthetic caches, and CLI runners."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PLUGIN_DIR = Path(__file__).parent / "plugins"


def missing(skip_reason: str, ci_reason: str | None = None) -> None:
    """Skip a test whose tool or service is missing; under CI (env `CI` set) fail instead, so
    a CI machine without it is noticed."""
    if os.environ.get("CI"):
        pytest.fail(ci_reason or skip_reason)
    pytest.skip(skip_reason)


def venv_tool(name: str, package: str) -> str:
    """A command installed next to this Python (the test extras), else skip (fail under CI)."""
    import shutil

    path = shutil.which(name, path=os.path.dirname(sys.executable))
    if path is None:
        missing(f"{package} is not installed",
                f"{package} is not installed (pip install -e '.[test]')")
    return path  # type: ignore[return-value]


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Derived SVDs and fetched resources go to per-session temporary folders, never $HOME."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("GEOSCREEN_WORK_DIR", str(base / "work"))
    monkeypatch.setenv("GEOSCREEN_DATA_DIR", str(base / "data"))


def make_cache(path: Path, n_genes: int = 400, dim: int = 16, n_layers: int = 3, seed: int = 0,
               planted: int = 40, zero_rows: tuple[int, ...] = (), prefix: str = "G"):
    """Gaussian genes G0..; the first `planted` genes are shifted on one direction."""
    from geoscreen.store.cache import write_cache

    rng = np.random.default_rng(seed)
    genes = [f"{prefix}{i}" for i in range(n_genes)]
    layers = {}
    for layer in range(n_layers):
        X = rng.standard_normal((n_genes, dim))
        X[:planted, 0] += 3.0
        X[list(zero_rows)] = 0.0
        layers[f"L{layer}"] = X.astype(np.float32)
    return write_cache(path, layers, genes, model="test", synthetic=True)


@pytest.fixture(scope="session")
def real_cache():
    """The MiniLM real-geometry test bed (tests/realgeom.py): built once per machine, reused."""
    from realgeom import minilm_cache

    return minilm_cache()


@pytest.fixture
def small_cache(tmp_path: Path):
    return make_cache(tmp_path / "cache", zero_rows=(398, 399))


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the installed `geoscreen` entry point in a real subprocess."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {}), "PYTHONPATH": os.pathsep.join(
        [str(PLUGIN_DIR), os.environ.get("PYTHONPATH", "")])}  # the caller's COLUMNS wins
    return subprocess.run([sys.executable, "-m", "geoscreen.agent.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=full_env)


@pytest.fixture
def cli():
    return run_cli
