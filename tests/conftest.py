"""Shared pytest setup: headless Qt, importable checkout, seeded torch."""

import os
import signal
import sys
from pathlib import Path

# Must be set before any QApplication exists (pytest-qt creates it lazily in the qapp fixture).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Tests never touch the network: no Ultralytics connectivity probe, pip AutoUpdate or analytics.
os.environ.setdefault("YOLO_OFFLINE", "1")

# Make `import poseapp` / `import app` work whatever the current directory is.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _private_latency_cache(tmp_path_factory, monkeypatch):
    """Latency calibrations go to a folder of this test session, never the user's cache."""
    monkeypatch.setenv("POSEAPP_CACHE", str(tmp_path_factory.getbasetemp() / "latency-cache"))


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test: tiny models run best so, and several threads spin against each other
    (and against other jobs) on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _own_signal_handlers():
    """Every test starts and ends with the process's own SIGINT/SIGTERM handlers: libraries a test starts
    (Ray's driver, Qt) install theirs for the whole process."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


@pytest.fixture(autouse=True)
def _seed_torch():
    """Give every test the same torch RNG state."""
    torch.manual_seed(0)
    yield


def _fetched(name: str) -> Path:
    path = ROOT / "assets" / "fetched" / name
    if not path.is_file():
        pytest.skip(f"{path.relative_to(ROOT)} missing: run ./setup.sh first")
    return path


@pytest.fixture(scope="session")
def sample_video() -> Path:
    """Absolute path of the sample clip fetched by setup.sh."""
    return _fetched("sample.mp4")


@pytest.fixture(scope="session")
def yolo_pose_weights() -> Path:
    """Absolute path of yolo11n-pose.pt fetched by setup.sh.

    Always hand Ultralytics an existing path: a name it cannot find locally is downloaded from GitHub.
    """
    return _fetched("yolo11n-pose.pt")
