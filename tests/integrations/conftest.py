"""Shared setup for the keras-tuner and Ray Tune integration tests (environment only)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def pytest_collection_finish(session) -> None:
    """Freeze the objects imported so far (TensorFlow, keras-tuner, Ray) out of the collector:
    keras-tuner calls gc.collect() before every build, which otherwise walks them all each time."""
    import gc

    gc.collect()
    gc.freeze()
