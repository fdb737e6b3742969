"""The ``poseapp`` command as ``pip install .`` makes it: its entry point, its data files, and that it finds
its checkpoint and detector from any directory (the package's home or ``$POSEAPP_HOME``), never the cwd."""

from __future__ import annotations

import fnmatch
import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from poseapp import paths
from poseapp.cli import launch
from poseapp.io.video import VideoWriter, probe
from poseapp.models import create_model, save_model

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def run_module(cwd: Path, *args: str, home: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m poseapp ARGS`` in ``cwd``, the checkout importable as an installed package would be."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "1000"}  # help lines unwrapped
    env.pop(paths.HOME_ENV, None)
    if home is not None:
        env[paths.HOME_ENV] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "poseapp", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_console_script_is_the_program_main_py_runs() -> None:
    module, _, name = PYPROJECT["project"]["scripts"]["poseapp"].partition(":")
    assert getattr(importlib.import_module(module), name) is launch
    assert (
        "launch()" in (ROOT / "main.py").read_text()
        and "launch()" in (ROOT / "poseapp/__main__.py").read_text()
    )


def test_the_default_files_are_installed_where_the_package_looks() -> None:
    """Each default file, relative to the home, is one of the data files ``pip install .`` copies into
    ``share/poseapp``, the installed home."""
    data_files = PYPROJECT["tool"]["setuptools"]["data-files"]
    for default in (paths.default_weights(), paths.default_detector()):
        relative = default.relative_to(paths.home())
        folder = f"share/poseapp/{relative.parent.as_posix()}"
        assert any(fnmatch.fnmatch(relative.as_posix(), p) for p in data_files.get(folder, [])), relative
    assert all(home.parts[-2:] == ("share", "poseapp") for home in paths.installed_homes())


def test_the_home_is_the_env_var_then_the_checkout_then_the_installed_share(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(paths.HOME_ENV, raising=False)
    assert paths.home() == ROOT
    assert paths.default_weights().is_file() and paths.default_weights().parent == ROOT / "weights"
    monkeypatch.setenv(paths.HOME_ENV, str(tmp_path))
    assert paths.home() == tmp_path.resolve()
    assert paths.default_detector() == tmp_path.resolve() / "assets" / "fetched" / "yolo11n-pose.pt"
    monkeypatch.delenv(paths.HOME_ENV)
    installed = tmp_path / "prefix" / "share" / "poseapp"
    monkeypatch.setattr(paths, "CHECKOUT", tmp_path / "site-packages")  # an installed package: no weights/
    monkeypatch.setattr(paths, "installed_homes", lambda: [installed])
    assert paths.home() == installed  # where a missing file is then reported
    (installed / "weights").mkdir(parents=True)
    assert paths.default_weights() == installed / "weights" / "evitpose_t_192x144.safetensors"


def test_help_from_another_directory_names_the_packages_files(tmp_path) -> None:
    run = run_module(tmp_path, "--help")
    assert run.returncode == 0, run.stderr
    text = run.stdout
    assert text.startswith("usage: poseapp ")
    assert f"(default: {ROOT / 'weights' / 'evitpose_t_192x144.safetensors'})" in text
    assert f"(default: {ROOT / 'assets' / 'fetched' / 'yolo11n-pose.pt'})" in text


def test_a_video_runs_from_another_directory_on_the_files_of_poseapp_home(
    tmp_path, yolo_pose_weights
) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    (home / "assets" / "fetched").mkdir(parents=True)
    (home / "weights").mkdir()
    work.mkdir()
    save_model(create_model("evitpose_t"), home / "weights" / "evitpose_t_192x144.safetensors")
    (home / "assets" / "fetched" / "yolo11n-pose.pt").symlink_to(yolo_pose_weights)
    with VideoWriter(work / "clip.mp4", 96, 64, 25) as writer:
        for _ in range(3):
            writer.write(np.full((64, 96, 3), 80, np.uint8))
    run = run_module(work, "--video", "clip.mp4", "--out", "out.mp4", "--quiet", "--threads", "1", home=home)
    assert run.returncode == 0, run.stderr
    assert probe(str(work / "out.mp4")).frames == 3
    # Without the files there, the run says where it looked, in one line.
    (home / "weights" / "evitpose_t_192x144.safetensors").unlink()
    run = run_module(work, "--video", "clip.mp4", "--out", "out.mp4", "--quiet", home=home)
    assert run.returncode == 2 and str(home / "weights") in run.stderr and len(run.stderr.splitlines()) == 1
