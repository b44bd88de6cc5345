"""Ray Tune hooks: a Keras callback for users' own trainables and a driver-side collector.

``AutoInitTuneCallback`` is Ray's own Keras report callback
(``ray.tune.integration.keras.TuneReportCheckpointCallback``) that first initializes the model
with AutoInit (through ``AutoInitCallback``) and then reports, with every epoch's Keras logs,
the summary of the model's ``SignalReport`` (``autoinit_max_var``, ``autoinit_min_var``, ...).
It also writes the full report as ``signal_report.json`` into the trial directory.
``SignalReportCollector`` is a ``ray.tune.Callback`` that gathers every trial's summary into
``signal_reports.jsonl`` in the experiment directory.

This module imports ray (and, through Ray's Keras callback, TensorFlow) when it is imported;
``import autoinit_nas`` does not import it.

Example:
    >>> from ray import tune
    >>> from autoinit_nas.tune_callback import AutoInitTuneCallback, SignalReportCollector
    >>> def train(config):  # doctest: +SKIP
    ...     model = build_my_model(config)
    ...     model.fit(x, y, validation_data=(xv, yv), epochs=5,
    ...               callbacks=[AutoInitTuneCallback(seed=0)])  # the one added line
    >>> tuner = tune.Tuner(train, run_config=tune.RunConfig(
    ...     callbacks=[SignalReportCollector()]))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ray import tune
from ray.tune.integration.keras import TuneReportCheckpointCallback

from autoinit_nas._context import Options
from autoinit_nas.callback import AutoInitCallback
from autoinit_nas.report import SignalReport

__all__ = [
    "REPORT_FILE",
    "SUMMARY_PREFIX",
    "AutoInitTuneCallback",
    "SignalReportCollector",
    "signal_summary",
]

logger = logging.getLogger("autoinit_nas")

#: Prefix of every key the signal summary adds to a trial's results.
SUMMARY_PREFIX = "autoinit_"
#: Name of the full report written into each trial directory.
REPORT_FILE = "signal_report.json"


def _weight_norm(model: Any) -> float:
    import keras

    total = 0.0
    for variable in model.weights:
        value = np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float64)
        total += float(np.sum(value * value))
    return math.sqrt(total)


def signal_summary(report: SignalReport, model: Any = None) -> dict[str, float]:
    """The few numbers of a ``SignalReport`` that go into a trial's results.

    Args:
        report: the report ``autoinit_nas.initialize`` returned.
        model: the model right after initialization; adds ``autoinit_weight_norm`` (the L2 norm
            of all its weights), a fingerprint of the initial weights.

    Returns:
        ``autoinit_max_var`` and ``autoinit_min_var`` (largest and smallest predicted layer
        output variance), ``autoinit_output_var`` (largest predicted model output variance),
        ``autoinit_seconds``, ``autoinit_layers`` (call sites), ``autoinit_warnings``, and
        ``autoinit_weight_norm`` when ``model`` is given.
    """
    summary = {
        "autoinit_max_var": float(report.max_var),
        "autoinit_min_var": float(report.min_var),
        "autoinit_output_var": float(max(report.output_vars)),
        "autoinit_seconds": float(report.seconds),
        "autoinit_layers": float(len(report.layers)),
        "autoinit_warnings": float(len(report.warnings)),
    }
    if model is not None:
        summary["autoinit_weight_norm"] = _weight_norm(model)
    return summary


def _write_trial_file(name: str, text: str) -> None:
    """Write ``name`` into the trial's directory in the experiment's storage.

    ``get_trial_dir()`` is a driver-side staging directory for a trial's first actor but the
    actor's working directory after ``reuse_actors`` resets it (which is not persisted unless
    artifacts are synced), so the file goes straight to the trial's storage path instead.
    """
    try:
        from ray.train._internal.session import get_session

        storage = get_session().storage
        fs, trial_path = storage.storage_filesystem, storage.trial_fs_path
    except Exception:  # a Ray without this storage context: Ray's public trial directory
        path = Path(tune.get_context().get_trial_dir()) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    fs.create_dir(trial_path, recursive=True)
    with fs.open_output_stream(f"{trial_path}/{name}") as stream:
        stream.write(text.encode())


def _as_list(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


class AutoInitTuneCallback(TuneReportCheckpointCallback):
    """Initializes with AutoInit at train begin; reports each epoch to Ray Tune with the summary.

    Add it to ``model.fit`` inside a Ray Tune function trainable. It replaces Ray's own
    ``TuneReportCheckpointCallback`` (it is one, with the same ``metrics``,
    ``report_metrics_on`` and ``checkpoint_on`` arguments), so do not add both.

    Args:
        initialize: initialize the model with AutoInit at ``on_train_begin`` (through
            ``AutoInitCallback``). ``False``: the model was initialized already and carries
            ``model.signal_report`` (as models built by the search spaces do); its summary is
            reported if present.
        once: with ``initialize``, a second ``fit`` on the same model keeps its weights.
        metrics: which Keras logs to report (Ray's meaning: None for all, a name, a list, or a
            ``{reported name: Keras name}`` dict). The summary is always added.
        report_metrics_on: Keras events at which to report (Ray's meaning).
        checkpoint_on: Keras events at which to also save a model checkpoint; none by default,
            since checkpointing every epoch costs a model save.
        extra_metrics: constant values added to every report (e.g. a parameter count).
        report_file: name of the full report written into the trial directory (None: none).
        **autoinit_options: ``AutoInit`` options (``seed``, ``mode``, ``distribution``, ...).

    Raises:
        TypeError: an unknown AutoInit option.
    """

    def __init__(
        self,
        *,
        initialize: bool = True,
        once: bool = True,
        metrics: str | list[str] | dict[str, str] | None = None,
        report_metrics_on: str | Sequence[str] = "epoch_end",
        checkpoint_on: str | Sequence[str] = (),
        extra_metrics: dict[str, Any] | None = None,
        report_file: str | None = REPORT_FILE,
        **autoinit_options: Any,
    ) -> None:
        Options(**autoinit_options)  # fail now on a misspelled option, not inside a trial
        super().__init__(
            checkpoint_on=_as_list(checkpoint_on),
            report_metrics_on=_as_list(report_metrics_on),
            metrics=metrics,
        )
        if not initialize and autoinit_options:
            raise ValueError(
                "Expected no AutoInit options with initialize=False (nothing is initialized). "
                f"Received: {sorted(autoinit_options)}"
            )
        self._autoinit = AutoInitCallback(once=once, **autoinit_options) if initialize else None
        self.extra_metrics = dict(extra_metrics or {})
        self.report_file = report_file
        self.report: SignalReport | None = None
        self.summary: dict[str, float] = {}

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self._autoinit is not None:
            self._autoinit.set_model(self.model)
            self._autoinit.on_train_begin(logs)
            report = self._autoinit.report
        else:
            report = getattr(self.model, "signal_report", None)
        if report is not None and report is not self.report:
            self.report = report
            self.summary = signal_summary(report, self.model)
            self._write_report()
        super().on_train_begin(logs)

    def _write_report(self) -> None:
        if self.report_file is None or self.report is None:
            return
        try:
            trial_id = tune.get_context().get_trial_id()
        except Exception:  # no Tune session at all
            trial_id = None
        if trial_id is None:  # a plain fit outside Tune: there is no trial directory
            logger.debug("Not in a Ray Tune trial; %s not written", self.report_file)
            return
        payload = {"trial_id": trial_id, "summary": self.summary, "report": self.report.to_dict()}
        _write_trial_file(self.report_file, json.dumps(payload, indent=1))

    def _get_reported_metrics(self, logs: dict) -> dict:
        metrics = dict(super()._get_reported_metrics(logs or {}))
        metrics.update(self.extra_metrics)
        metrics.update(self.summary)
        return metrics


class SignalReportCollector(tune.Callback):
    """Driver-side ``ray.tune.Callback``: one row per trial with its signal summary.

    On the first result of a trial that carries ``autoinit_*`` keys (from
    ``AutoInitTuneCallback`` or ``evolution.make_trainable``), a row with the trial id, its
    ``genome_hash`` (if any) and the summary is added to ``filename`` in the experiment
    directory. The rows are part of the callback's state, so ``Tuner.restore`` keeps them.

    Args:
        filename: file in the experiment directory, one JSON object per line.
    """

    def __init__(self, filename: str = "signal_reports.jsonl") -> None:
        if not filename or os.sep in filename:
            raise ValueError(
                f"Expected a plain file name for the collector. Received: filename={filename!r}"
            )
        self.filename = filename
        self.rows: list[dict[str, Any]] = []
        self._seen: set[str] = set()
        self._experiment_dir: str | None = None

    def _record(self, trial: Any, result: dict | None) -> None:
        if trial.trial_id in self._seen or not result:
            return
        summary = {k: v for k, v in result.items() if k.startswith(SUMMARY_PREFIX)}
        if not summary:
            return
        self._seen.add(trial.trial_id)
        config = getattr(trial, "config", {}) or {}
        row = {
            "trial_id": trial.trial_id,
            "genome_hash": result.get("genome_hash", config.get("genome_hash")),
            **summary,
        }
        self.rows.append(row)
        self._experiment_dir = trial.local_experiment_path
        self._write()

    def _write(self) -> None:
        if self._experiment_dir is None:
            return
        path = Path(self._experiment_dir) / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in self.rows)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict, **info: Any
    ) -> None:
        self._record(trial, result)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._record(trial, getattr(trial, "last_result", None))

    def get_state(self) -> dict[str, Any]:
        return {"rows": list(self.rows)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.rows = list(state.get("rows", []))
        self._seen = {row["trial_id"] for row in self.rows}
