"""The autoinit-nas command line, called in this process."""

from __future__ import annotations

from evolution import RunConfig, RunStore
from evolution.cli import build_parser, main


def test_evolve_resume_report_export(tmp_path, npz_task, capsys) -> None:
    run_dir = tmp_path / "run"
    common = ["--no-progress"]
    code = main(
        [
            "evolve",
            "--task",
            str(npz_task),
            "--space",
            "tiny_space:TinyMLPSpace",
            "--population",
            "2",
            "--budget-evals",
            "2",
            "--epochs",
            "1",
            "--init",
            "default",
            "--run-dir",
            str(run_dir),
            *common,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert f"Report: {run_dir / 'report' / 'report.md'}" in out
    assert (run_dir / "report" / "report.md").exists()
    assert main(["resume", str(run_dir), "--budget-evals", "3", "--no-report", *common]) == 0
    assert RunStore(run_dir, create=False).count("done", "failed") == 3
    assert main(["export", str(run_dir), "-o", str(tmp_path / "best.keras")]) == 0
    assert "reloads: True" in capsys.readouterr().out


def test_errors_exit_2_with_a_message(tmp_path, capsys) -> None:
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "run.sqlite" in capsys.readouterr().err
    assert (
        main(
            [
                "evolve",
                "--task",
                str(tmp_path / "x.csv"),
                "--run-dir",
                str(tmp_path / "r"),
                "--no-progress",
            ]
        )
        == 2
    )
    assert "Received: task=" in capsys.readouterr().err


def test_defaults_are_a_short_mnist1d_run() -> None:
    args = build_parser().parse_args(["evolve"])
    assert args.task == "mnist1d" and args.space == "network" and args.workers == 0
    assert args.budget_evals is None and args.time_budget is None  # -> 24 candidates
    assert args.algorithm == "regularized" and args.init == "autoinit"
    # The parser's defaults (literals, so that --help imports nothing heavy) are RunConfig's.
    defaults = RunConfig()
    for key in ("epochs", "batch_size", "learning_rate", "population", "sample_size", "seed"):
        assert getattr(args, key) == getattr(defaults, key), key
    assert (defaults.epochs, defaults.batch_size, defaults.learning_rate) == (10, 100, 1e-2)


def test_command_line_starts_without_tensorflow() -> None:
    # `autoinit-nas --help` must not pay TensorFlow's import, and the command must be able to set
    # TensorFlow's environment (log level, worker settings) before TensorFlow starts.
    import subprocess
    import sys

    code = (
        "import sys, evolution, evolution.cli; "
        "evolution.cli.build_parser().format_help(); "
        "print(sorted(m for m in ('tensorflow', 'keras', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
