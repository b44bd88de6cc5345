"""The run store: one SQLite file per run directory (candidates, checkpoints, settings)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoinit_nas.errors import FatalSearchError

__all__ = ["CandidateRecord", "RunStore", "STORE_FILENAME"]

STORE_FILENAME = "run.sqlite"
_SCHEMA_VERSION = 1
_CHECKPOINTS_KEPT = 5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS candidates (
    id INTEGER PRIMARY KEY,
    hash TEXT NOT NULL,
    genome TEXT NOT NULL,
    parents TEXT NOT NULL DEFAULT '[]',
    origin TEXT NOT NULL DEFAULT '',
    generation INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    fitness TEXT,
    val_accuracy REAL,
    val_loss REAL,
    param_count INTEGER,
    seed INTEGER NOT NULL,
    epochs_run INTEGER,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    train_seconds REAL,
    error_kind TEXT,
    error TEXT,
    duplicate_of INTEGER,
    worker TEXT
);
CREATE INDEX IF NOT EXISTS candidates_hash ON candidates(hash);
CREATE INDEX IF NOT EXISTS candidates_status ON candidates(status);
CREATE TABLE IF NOT EXISTS checkpoints (
    id INTEGER PRIMARY KEY,
    created_at REAL NOT NULL,
    evaluations INTEGER NOT NULL,
    state TEXT NOT NULL
);
"""

#: Statuses of a candidate row. ``pending``/``running`` rows are re-submitted on resume.
STATUSES = ("pending", "running", "done", "failed", "duplicate")


@dataclass
class CandidateRecord:
    """One row of the candidates table."""

    id: int
    hash: str
    genome: str
    parents: list[int]
    origin: str
    generation: int
    status: str
    seed: int
    created_at: float
    fitness: list[float] | None = None
    val_accuracy: float | None = None
    val_loss: float | None = None
    param_count: int | None = None
    epochs_run: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    train_seconds: float | None = None
    error_kind: str | None = None
    error: str | None = None
    duplicate_of: int | None = None
    worker: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> CandidateRecord:
        data = dict(row)
        data["parents"] = json.loads(data["parents"])
        data["fitness"] = None if data["fitness"] is None else json.loads(data["fitness"])
        return cls(**data)


class RunStore:
    """The SQLite file of one run (WAL journal; one writer: the process driving the search).

    A candidate's result and the checkpoint that follows from it are written in one
    transaction, so the file never holds a result the checkpoint does not know about.

    Args:
        run_dir: directory of the run; created if missing.
        create: create the database if it does not exist (``False`` for ``resume``/``report``).
    """

    def __init__(self, run_dir: str | Path, *, create: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / STORE_FILENAME
        if not self.path.exists() and not create:
            raise FatalSearchError(
                f"Expected a run directory containing {STORE_FILENAME}. Received: {str(self.run_dir)!r}"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)
        version = self.get_meta("schema_version")
        if version is None:
            self.set_meta("schema_version", _SCHEMA_VERSION)
        elif version != _SCHEMA_VERSION:
            raise FatalSearchError(
                f"Expected run store schema {_SCHEMA_VERSION}. Received: {version} in {self.path}"
            )

    # -- transactions -------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside happen together or not at all."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def close(self) -> None:
        """Close the connection (the WAL is checkpointed into the main file)."""
        self._conn.close()

    # -- meta ---------------------------------------------------------------------------
    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON-serializable setting."""
        self._conn.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, json.dumps(value))
        )

    def get_meta(self, key: str, default: Any = None) -> Any:
        """Read a setting written by ``set_meta``."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row["value"])

    # -- candidates ---------------------------------------------------------------------
    def add_candidate(
        self,
        *,
        hash: str,
        genome: str,
        parents: list[int] | tuple[int, ...],
        origin: str,
        generation: int,
        seed: int,
        status: str = "pending",
        duplicate_of: int | None = None,
    ) -> int:
        """Insert a candidate row and return its id."""
        cursor = self._conn.execute(
            "INSERT INTO candidates(hash, genome, parents, origin, generation, status, seed, "
            "created_at, duplicate_of) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                hash,
                genome,
                json.dumps(list(parents)),
                origin,
                generation,
                status,
                seed,
                time.time(),
                duplicate_of,
            ),
        )
        return int(cursor.lastrowid)

    def mark_running(self, candidate_id: int, worker: str | None = None) -> None:
        """Note that a candidate's training has started."""
        self._conn.execute(
            "UPDATE candidates SET status = 'running', started_at = ?, worker = ? WHERE id = ?",
            (time.time(), worker, candidate_id),
        )

    def finish_candidate(
        self, candidate_id: int, *, status: str, fitness: tuple[float, ...], **fields: Any
    ) -> None:
        """Record a candidate's outcome (``done``, ``failed`` or ``duplicate``)."""
        if status not in STATUSES:
            raise ValueError(f"Expected a status in {STATUSES}. Received: status={status!r}")
        allowed = {
            "val_accuracy",
            "val_loss",
            "param_count",
            "epochs_run",
            "started_at",
            "train_seconds",
            "error_kind",
            "error",
            "duplicate_of",
            "worker",
        }
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(
                f"Expected fields among {sorted(allowed)}. Received: {sorted(unknown)}"
            )
        names = ["status", "fitness", "finished_at", *fields]
        values = [status, json.dumps(list(fitness)), time.time(), *fields.values()]
        assignments = ", ".join(f"{name} = ?" for name in names)
        self._conn.execute(
            f"UPDATE candidates SET {assignments} WHERE id = ?", (*values, candidate_id)
        )

    def candidate(self, candidate_id: int) -> CandidateRecord:
        """One candidate by id."""
        row = self._conn.execute(
            "SELECT * FROM candidates WHERE id = ?", (candidate_id,)
        ).fetchone()
        if row is None:
            raise KeyError(f"No candidate with id {candidate_id} in {self.path}")
        return CandidateRecord.from_row(row)

    def candidates(self, *statuses: str) -> list[CandidateRecord]:
        """All candidates in id order, optionally only those with the given statuses."""
        if statuses:
            marks = ", ".join("?" for _ in statuses)
            rows = self._conn.execute(
                f"SELECT * FROM candidates WHERE status IN ({marks}) ORDER BY id", statuses
            )
        else:
            rows = self._conn.execute("SELECT * FROM candidates ORDER BY id")
        return [CandidateRecord.from_row(row) for row in rows]

    def trained_with_hash(self, genome_hash: str) -> CandidateRecord | None:
        """The first finished (done or failed) candidate with this genome hash, if any."""
        row = self._conn.execute(
            "SELECT * FROM candidates WHERE hash = ? AND status IN ('done', 'failed') "
            "ORDER BY id LIMIT 1",
            (genome_hash,),
        ).fetchone()
        return None if row is None else CandidateRecord.from_row(row)

    def count(self, *statuses: str) -> int:
        """Number of candidates with the given statuses (all when none are given)."""
        if not statuses:
            return int(self._conn.execute("SELECT COUNT(*) FROM candidates").fetchone()[0])
        marks = ", ".join("?" for _ in statuses)
        return int(
            self._conn.execute(
                f"SELECT COUNT(*) FROM candidates WHERE status IN ({marks})", statuses
            ).fetchone()[0]
        )

    # -- checkpoints --------------------------------------------------------------------
    def write_checkpoint(self, state: dict[str, Any], evaluations: int) -> None:
        """Append a checkpoint and drop all but the last few (call inside ``transaction``)."""
        self._conn.execute(
            "INSERT INTO checkpoints(created_at, evaluations, state) VALUES (?, ?, ?)",
            (time.time(), evaluations, json.dumps(state)),
        )
        self._conn.execute(
            "DELETE FROM checkpoints WHERE id NOT IN "
            "(SELECT id FROM checkpoints ORDER BY id DESC LIMIT ?)",
            (_CHECKPOINTS_KEPT,),
        )

    def latest_checkpoint(self) -> dict[str, Any] | None:
        """The state of the newest checkpoint, or ``None`` before the first one."""
        row = self._conn.execute(
            "SELECT state FROM checkpoints ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return None if row is None else json.loads(row["state"])
