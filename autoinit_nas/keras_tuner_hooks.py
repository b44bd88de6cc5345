"""``AutoInitHyperModel``: every model a keras-tuner tuner builds comes back AutoInit-initialized.

This module imports ``keras_tuner``; ``import autoinit_nas`` does not import this module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable
from typing import Any

import keras

try:
    import keras_tuner
    from keras_tuner import errors as kt_errors
except ImportError as exc:  # pragma: no cover - keras-tuner is a declared dependency
    raise ImportError(
        "autoinit_nas.keras_tuner_hooks needs keras-tuner: pip install keras-tuner"
    ) from exc

from autoinit_nas._context import Options
from autoinit_nas.autoinit import initialize

__all__ = ["AutoInitHyperModel"]

logger = logging.getLogger("autoinit_nas")

_OPTION_NAMES = tuple(f.name for f in dataclasses.fields(Options))
# Hyperband writes its bookkeeping (epochs, bracket, round, parent trial) into the values; they
# do not change the model, so the same configuration keeps the same weights across rounds.
_BOOKKEEPING_PREFIX = "tuner/"


def _describe(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


class _FunctionHyperModel(keras_tuner.HyperModel):
    """A ``build(hp)`` function as a HyperModel (``fit`` is ``model.fit``)."""

    def __init__(self, build_fn: Callable[[Any], Any]) -> None:
        super().__init__(name=getattr(build_fn, "__name__", None))
        self.build_fn = build_fn

    def build(self, hp: keras_tuner.HyperParameters) -> Any:
        return self.build_fn(hp)


class AutoInitHyperModel(keras_tuner.HyperModel):
    """Wraps a HyperModel or a ``build(hp)`` function so every built model is AutoInit-initialized.

    The weights of each model are drawn with a seed derived from ``seed`` and the trial's active
    hyperparameter values (``seed_for(hp)``), so rebuilding a trial (keras-tuner's resume with
    ``overwrite=False``, ``tuner.load_model``, ``get_best_models``) gives identical weights, and
    two trials with different values get different draws. The ``SignalReport`` is attached to the
    model as ``model.signal_report``. ``fit`` and ``declare_hyperparameters`` are delegated to
    the wrapped HyperModel.

    Works with any keras-tuner tuner (RandomSearch, Hyperband, BayesianOptimization, GridSearch,
    ``EvolutionTuner``): tuners call ``hypermodel.build(hp)`` and get the initialized model.

    Args:
        hypermodel: a ``keras_tuner.HyperModel`` or a callable ``build(hp) -> keras.Model``. The
            model must have a known input shape (start it with ``keras.Input``).
        name: name of this HyperModel (default: the wrapped one's name).
        **autoinit_options: options of ``autoinit_nas.initialize`` (``mode``, ``distribution``,
            ``center``, ``signal_variance``, ``input_mean``, ``input_var``, ``seed``, ...).
            ``seed`` (default 0) is the base seed the per-trial seeds derive from.

    Raises:
        TypeError: ``hypermodel`` is neither a HyperModel nor callable, an option is unknown, or
            ``build`` returns something that is not a ``keras.Model`` (a
            ``keras_tuner.errors.FatalTypeError``, so a tuner stops instead of retrying).

    Example:
        >>> def build(hp):
        ...     inputs = keras.Input((40, 1))
        ...     x = keras.layers.Conv1D(hp.Int("filters", 8, 32, step=8), 5, activation="relu")(inputs)
        ...     outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling1D()(x))
        ...     model = keras.Model(inputs, outputs)
        ...     model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        ...     return model
        >>> tuner = keras_tuner.RandomSearch(AutoInitHyperModel(build, seed=0),
        ...                                  objective="val_accuracy", max_trials=5)
    """

    def __init__(
        self,
        hypermodel: keras_tuner.HyperModel | Callable[[Any], keras.Model],
        name: str | None = None,
        **autoinit_options: Any,
    ) -> None:
        if isinstance(hypermodel, keras_tuner.HyperModel):
            inner = hypermodel
        elif callable(hypermodel):
            inner = _FunctionHyperModel(hypermodel)
        else:
            raise TypeError(
                "Expected a keras_tuner.HyperModel or a callable build(hp) returning a "
                f"keras.Model. Received: hypermodel={hypermodel!r} of type "
                f"{type(hypermodel).__name__}"
            )
        unknown = sorted(set(autoinit_options) - set(_OPTION_NAMES))
        if unknown:
            raise TypeError(
                f"Expected AutoInit options among {list(_OPTION_NAMES)}. Received unknown "
                f"option(s): {unknown}"
            )
        seed = autoinit_options.pop("seed", 0)
        if seed is None:
            seed = 0
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"Expected an integer seed. Received: seed={seed!r}")
        Options(**autoinit_options)  # validate values now, not in the first trial
        super().__init__(name=name or inner.name, tunable=True)
        self.hypermodel = inner
        self.seed = seed
        self.autoinit_options = dict(autoinit_options)
        self._wrapped_name = (
            f"the build function {_describe(inner.build_fn)!r}"
            if isinstance(inner, _FunctionHyperModel)
            else f"{type(inner).__name__}.build()"
        )

    def seed_for(self, hp: keras_tuner.HyperParameters) -> int:
        """The AutoInit seed of the model built from ``hp``: the base seed plus a hash of the
        hyperparameter values (keras-tuner keeps only active ones there; Hyperband's
        ``tuner/*`` bookkeeping is left out)."""
        values = {
            name: value
            for name, value in hp.values.items()
            if not name.startswith(_BOOKKEEPING_PREFIX)
        }
        text = f"{self.seed}|" + ";".join(f"{k}={values[k]!r}" for k in sorted(values))
        return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16)

    def declare_hyperparameters(self, hp: keras_tuner.HyperParameters) -> None:
        self.hypermodel.declare_hyperparameters(hp)

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        """Builds the wrapped model for ``hp`` and initializes it with AutoInit."""
        model = self.hypermodel.build(hp)
        if not isinstance(model, keras.Model):
            raise kt_errors.FatalTypeError(
                f"Expected {self._wrapped_name} to return a keras.Model. "
                f"Received: {model!r} of type {type(model).__name__}"
            )
        seed = self.seed_for(hp)
        report = initialize(model, seed=seed, **self.autoinit_options)
        model.signal_report = report
        logger.debug(
            "AutoInitHyperModel: initialized '%s' with seed %d (output variance %s)",
            model.name,
            seed,
            report.output_vars,
        )
        return model

    def fit(
        self, hp: keras_tuner.HyperParameters, model: keras.Model, *args: Any, **kwargs: Any
    ) -> Any:
        """Trains with the wrapped HyperModel's ``fit`` (``model.fit`` unless it overrides it)."""
        return self.hypermodel.fit(hp, model, *args, **kwargs)
