"""autoinit-nas: AutoInit for Keras 3, and the engine under the architecture search.

``import autoinit_nas`` imports Keras but none of ray, keras_tuner or matplotlib.
"""

from __future__ import annotations

from autoinit_nas._context import Estimate
from autoinit_nas._lazy import lazy_exports
from autoinit_nas._registry import register_estimator
from autoinit_nas._signal import Signal
from autoinit_nas.autoinit import AutoInit, initialize, predict_signal
from autoinit_nas.callback import AutoInitCallback
from autoinit_nas.errors import (
    AutoInitError,
    CandidateFailedError,
    FatalSearchError,
    InvalidGenomeError,
    SignalError,
    UnsupportedLayerError,
)
from autoinit_nas.parametric_activation import ParametricActivation
from autoinit_nas.report import LayerSignal, SignalReport
from autoinit_nas.weighted_add import WeightedAdd, rewrite_residuals

__version__ = "0.1.0"

__all__ = [
    "AutoInit",
    "AutoInitCallback",
    "AutoInitHyperModel",
    "AutoInitTuneCallback",
    "AutoInitError",
    "CandidateFailedError",
    "Estimate",
    "EvolutionOracle",
    "EvolutionTuner",
    "FatalSearchError",
    "InvalidGenomeError",
    "LayerSignal",
    "ParametricActivation",
    "Signal",
    "SignalError",
    "SignalReport",
    "SignalReportCollector",
    "UnsupportedLayerError",
    "WeightedAdd",
    "initialize",
    "predict_signal",
    "register_estimator",
    "rewrite_residuals",
]

# keras-tuner and Ray Tune hooks are imported on first use, so ``import autoinit_nas`` stays light.
_LAZY = {
    "AutoInitHyperModel": "autoinit_nas.keras_tuner_hooks",
    "EvolutionOracle": "autoinit_nas.evolution_oracle",
    "EvolutionTuner": "autoinit_nas.evolution_oracle",
    "AutoInitTuneCallback": "autoinit_nas.tune_callback",
    "SignalReportCollector": "autoinit_nas.tune_callback",
}

__getattr__ = lazy_exports('autoinit_nas', _LAZY, globals())
