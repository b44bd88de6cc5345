"""``autoinit-nas report``: figures, a summary table and a markdown/HTML summary of a run."""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Any

import numpy as np

from evolution import _plots
from evolution._config import RunConfig
from evolution._spaces import resolve_space
from evolution._store import CandidateRecord, RunStore
from search_spaces import SearchSpace, TaskSpec

__all__ = ["write_report"]

logger = logging.getLogger(__name__)


def _table(records: list[CandidateRecord], limit: int = 10) -> list[list[str]]:
    done = sorted(
        (r for r in records if r.status == "done"), key=lambda r: (-(r.val_accuracy or 0.0), r.id)
    )[:limit]
    rows = [
        [
            "rank",
            "id",
            "hash",
            "val acc",
            "val loss",
            "params",
            "gen",
            "origin",
            "epochs",
            "train s",
        ]
    ]
    for rank, r in enumerate(done, 1):
        rows.append(
            [
                str(rank),
                str(r.id),
                r.hash,
                f"{r.val_accuracy:.4f}",
                f"{r.val_loss:.4f}" if r.val_loss is not None else "-",
                f"{r.param_count:,}" if r.param_count else "-",
                str(r.generation),
                r.origin,
                str(r.epochs_run or "-"),
                f"{r.train_seconds or 0:.1f}",
            ]
        )
    return rows


def _markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def _best_model_figures(
    space: SearchSpace, record: CandidateRecord, spec: TaskSpec, out: Path, notes: list[str]
) -> dict[str, str]:
    import keras

    figures: dict[str, str] = {}
    keras.backend.clear_session()
    try:
        model = space.build(space.from_json(record.genome), spec, init="autoinit", seed=record.seed)
    except Exception as exc:  # the report still has the rest
        notes.append(f"Could not build the best candidate for its figures: {exc}")
        return figures
    _plots.plot_network(
        model,
        out / "best_network.png",
        title=f"candidate {record.id} ({record.hash}), {record.param_count:,} params",
    )
    figures["Best network"] = "best_network.png"
    if _plots.plot_activations(model, out / "best_activation.png"):
        figures["Activation functions of the best network"] = "best_activation.png"
    else:
        notes.append("The best network has no activation function to draw.")
    report = getattr(model, "signal_report", None)
    if report is not None and hasattr(report, "plot"):
        try:
            if hasattr(report, "measure"):  # the measured points beside the predictions
                report.measure(model, samples=64, seed=record.seed)
                errors = report.errors()
                if len(errors):
                    notes.append(
                        "AutoInit's predicted vs measured variance of the best network "
                        f"(64 Gaussian samples): median error {100 * np.median(errors):.1f}%, "
                        f"max {100 * np.max(errors):.1f}% over {len(errors)} layers."
                    )
            report.plot(out / "signal_propagation.png")
            figures["Signal propagation of the best network (AutoInit)"] = "signal_propagation.png"
        except Exception as exc:
            notes.append(f"Signal propagation plot failed: {exc}")
    else:
        notes.append("The search space attached no signal report; signal plot skipped.")
    return figures


def write_report(
    run_dir: str | Path, *, space: SearchSpace | None = None, out_dir: str | Path | None = None
) -> Path:
    """Write figures, ``report.md`` and ``report.html`` for a run; returns the markdown path.

    Figures: best and median validation accuracy over evaluations, accuracy vs parameters with
    the Pareto front, the best network's layer graph, its activation functions and its signal
    propagation (``SignalReport.plot``). Test accuracy appears once ``export`` has run: the
    test split is not touched here.

    Args:
        run_dir: the run directory.
        space: search space instance (otherwise resolved from the run's settings).
        out_dir: where to write (default ``run_dir/report``).
    """
    store = RunStore(run_dir, create=False)
    try:
        config = RunConfig.from_dict(store.get_meta("config"))
        records = store.candidates()
        checkpoint = store.latest_checkpoint() or {}
        spec_data = store.get_meta("task_spec")
        export = store.get_meta("export")
    finally:
        store.close()
    out = Path(out_dir) if out_dir else Path(run_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    logbook = checkpoint.get("algorithm", {}).get("logbook", [])
    notes: list[str] = []
    _plots.plot_fitness(logbook, records, out / "fitness.png")
    _plots.plot_pareto(records, out / "pareto.png")
    figures = {
        "Validation accuracy over evaluations": "fitness.png",
        "Accuracy vs parameters (Pareto front)": "pareto.png",
    }
    done = [r for r in records if r.status == "done"]
    best = max(done, key=lambda r: (r.val_accuracy or 0.0, -r.id), default=None)
    if best is not None and spec_data is not None:
        try:
            spec = TaskSpec(
                tuple(spec_data["input_shape"]),
                spec_data["num_classes"],
                spec_data.get("learning_rate", 1e-3),
            )
            space = space or resolve_space(config.space, config.space_options, task=spec)
            figures.update(_best_model_figures(space, best, spec, out, notes))
        except Exception as exc:
            notes.append(f"Best-network figures skipped: {exc}")
    failed = [r for r in records if r.status == "failed"]
    counts = {s: sum(r.status == s for r in records) for s in ("done", "failed", "duplicate")}
    lines = [
        f"# autoinit-nas run report: {Path(run_dir).resolve().name}",
        "",
        f"- task: `{config.task}`, algorithm: `{config.algorithm}`, population "
        f"{config.population}, init: `{config.init}`, seed {config.seed}",
        f"- candidates: {counts['done']} trained, {counts['failed']} failed, "
        f"{counts['duplicate']} duplicates (not retrained)",
        f"- search time: {checkpoint.get('elapsed', 0.0) / 60:.1f} min",
    ]
    if best is not None:
        lines.append(
            f"- best: candidate {best.id} (`{best.hash}`), validation accuracy "
            f"{best.val_accuracy:.4f}, {best.param_count:,} parameters"
        )
    if export:
        test = export.get("test_accuracy")
        lines.append(
            f"- exported: candidate {export['candidate_id']} -> `{export['path']}`, test "
            f"accuracy {'n/a' if test is None else f'{test:.4f}'}"
        )
    lines += ["", "## Top candidates", "", _markdown_table(_table(records)), ""]
    if failed:
        lines += ["## Failures", ""]
        lines += [f"- candidate {r.id} ({r.error_kind}): {r.error}" for r in failed[:20]]
        lines.append("")
    for title, name in figures.items():
        lines += [f"## {title}", "", f"![{title}]({name})", ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    md = out / "report.md"
    md.write_text("\n".join(lines))
    (out / "report.html").write_text(_html(lines, records, figures))
    logger.info("Report written to %s", md)
    return md


def _html(lines: list[str], records: list[CandidateRecord], figures: dict[str, str]) -> str:
    parts: list[Any] = [
        "<!doctype html><meta charset='utf-8'><title>autoinit-nas report</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:auto}"
        "td,th{padding:2px 8px;border-bottom:1px solid #ddd}</style>",
    ]
    for line in lines:
        if line.startswith("# "):
            parts.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("- "):
            parts.append(f"<p>{html.escape(line[2:])}</p>")
    rows = _table(records)
    parts.append("<h2>Top candidates</h2><table>")
    parts.append("<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in rows[0]) + "</tr>")
    for row in rows[1:]:
        parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    parts.append("</table>")
    for title, name in figures.items():
        parts.append(
            f"<h2>{html.escape(title)}</h2><img src='{html.escape(name)}' style='max-width:100%'>"
        )
    return "\n".join(parts)
