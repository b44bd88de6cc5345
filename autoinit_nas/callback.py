"""``AutoInitCallback``: initialize a model with AutoInit when training begins."""

from __future__ import annotations

import logging
from typing import Any

import keras

from autoinit_nas.autoinit import initialize
from autoinit_nas.report import SignalReport

__all__ = ["AutoInitCallback"]

logger = logging.getLogger("autoinit_nas")


class AutoInitCallback(keras.callbacks.Callback):
    """Initializes the model with AutoInit at ``on_train_begin`` and keeps the report.

    The report is on ``callback.report`` and on ``model.signal_report``. With ``once=True``
    (default) a second ``fit`` on the same model does not re-initialize it.

    Args:
        once: initialize only on the first ``fit``.
        **options: ``AutoInit`` options (``seed``, ``mode``, ``distribution``, ...).

    Example:
        >>> model.fit(x, y, epochs=5, callbacks=[AutoInitCallback(seed=0)])
    """

    def __init__(self, once: bool = True, **options: Any) -> None:
        super().__init__()
        self.once = once
        self.options = options
        self.report: SignalReport | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.once and self.report is not None:
            return
        self.report = initialize(self.model, **self.options)
        self.model.signal_report = self.report
        logger.info("AutoInit initialized '%s' in %.3f s (output variance %s)",
                    self.model.name, self.report.seconds, self.report.output_vars)
