from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tiny_space import make_npz  # noqa: E402


@pytest.fixture(scope="session")
def npz_task(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small 3-class .npz task (600 train / 200 test samples, 8 features)."""
    return make_npz(tmp_path_factory.mktemp("data") / "blobs.npz")


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment in which `python -m evolution.cli` finds the package and the tiny space."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE), env.get("PYTHONPATH", "")])
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env
