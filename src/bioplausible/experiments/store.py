"""The run store: a SQLite database (WAL mode) plus one run directory per run hash.

Layout of a store directory ``DIR``::

    DIR/store.sqlite          runs, per-epoch metrics, which spec asked for which run
    DIR/runs/<hash>/          the run directory of ``bioplausible.training.train``

Tables:

* ``runs``: ``hash`` (primary key), ``config`` (JSON), the grid columns copied out of it for filtering
  (``dataset``, ``rule``, ``preset``, ``seed``, ``update_noise``, ``target_epsilon``), ``status``
  (``pending``, ``running``, ``completed``, ``converged``, ``diverged``, ``interrupted``, ``failed``),
  ``host``, ``pid``, ``started``/``finished``/``heartbeat`` (Unix seconds), ``seconds``, ``epochs``,
  ``test_error``, ``error`` and ``summary`` (JSON);
* ``metrics``: ``(hash, epoch)`` → the epoch's metrics (JSON) plus ``test_error`` and ``train_loss``;
* ``spec_runs``: ``(spec, hash)``: a run may belong to several specs and is trained once.

Every write is a short transaction; ``busy_timeout`` lets concurrent writers (several sweeps, several
processes) wait for each other instead of failing. A run is *claimed* atomically before it starts
(``BEGIN IMMEDIATE``), so two sweeps over the same store never train the same run at once; a claim whose
owner is gone (its process is dead on this host, or its heartbeat is older than ``STALE_SECONDS``) is
taken over and the run resumes from its checkpoint.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

from ..errors import UserError

FINAL = ("completed", "converged", "diverged", "failed")
DONE = ("completed", "converged")
STATUSES = ("pending", "running", "interrupted", *FINAL)
STALE_SECONDS = 120.0
COLUMNS = ("dataset", "rule", "preset", "seed", "update_noise", "target_epsilon")
HOST = socket.gethostname()

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    hash TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    dataset TEXT, rule TEXT, preset TEXT, seed INTEGER, update_noise REAL, target_epsilon REAL,
    status TEXT NOT NULL DEFAULT 'pending',
    host TEXT, pid INTEGER,
    created REAL, started REAL, finished REAL, heartbeat REAL,
    seconds REAL, epochs INTEGER, test_error REAL,
    error TEXT, summary TEXT
);
CREATE TABLE IF NOT EXISTS metrics (
    hash TEXT NOT NULL, epoch INTEGER NOT NULL, test_error REAL, train_loss REAL, data TEXT NOT NULL,
    PRIMARY KEY (hash, epoch)
);
CREATE TABLE IF NOT EXISTS spec_runs (
    spec TEXT NOT NULL, hash TEXT NOT NULL, PRIMARY KEY (spec, hash)
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
"""


def _pid_alive(pid) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Store:
    """A run store in directory ``root`` (created if needed)."""

    def __init__(self, root, create: bool = True):
        root = Path(root)
        if root.suffix == ".sqlite":
            root = root.parent
        self.root = root
        self.db_path = root / "store.sqlite"
        if not create and not self.db_path.is_file():
            raise UserError(f"store: {str(root)!r} holds no run store (no store.sqlite); run a sweep first")
        try:
            root.mkdir(parents=True, exist_ok=True)
            self._con = sqlite3.connect(self.db_path, timeout=60.0, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise UserError(f"store: cannot open {str(self.db_path)!r} ({exc}); choose a writable directory") from None
        self._con.row_factory = sqlite3.Row
        try:
            self._con.execute("PRAGMA busy_timeout = 60000")
            self._con.execute("PRAGMA journal_mode = WAL")
            self._con.execute("PRAGMA synchronous = NORMAL")
            self._con.executescript(SCHEMA)
        except sqlite3.OperationalError as exc:
            raise self._error(exc) from None

    def _error(self, exc: Exception) -> UserError:
        """One line for a store that cannot be written (disk full, read-only, locked for too long)."""
        return UserError(
            f"store: {str(self.db_path)!r}: {exc}; runs already recorded are kept (every write is a transaction); "
            "free space or fix the store location, then run the sweep again"
        )

    def close(self):
        self._con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @contextmanager
    def _tx(self):
        try:
            self._con.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise self._error(exc) from None
        try:
            yield self._con
            self._con.execute("COMMIT")
        except BaseException as exc:
            if self._con.in_transaction:
                self._con.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                raise self._error(exc) from None
            raise

    def run_dir(self, h: str) -> Path:
        return self.root / "runs" / h

    # ------------------------------------------------------------------ writing
    def add_runs(self, spec_name: str, configs) -> None:
        """Register configs (TrainConfig) under a spec; existing runs keep their status."""
        now = time.time()
        with self._tx() as con:
            for cfg in configs:
                d = cfg.to_dict()
                h = cfg.run_hash()
                con.execute(
                    "INSERT OR IGNORE INTO runs (hash, config, dataset, rule, preset, seed, update_noise, "
                    "target_epsilon, status, created) VALUES (?,?,?,?,?,?,?,?,'pending',?)",
                    (h, json.dumps(_hashed(d), sort_keys=True), *(d[c] for c in COLUMNS), now),
                )
                con.execute("INSERT OR IGNORE INTO spec_runs (spec, hash) VALUES (?, ?)", (spec_name, h))

    def claim(self, h: str, pid: int | None = None, host: str = HOST) -> bool:
        """Mark run ``h`` running for this process unless it is final or claimed by a live owner."""
        pid = os.getpid() if pid is None else pid
        now = time.time()
        with self._tx() as con:
            row = con.execute("SELECT status, host, pid, heartbeat FROM runs WHERE hash = ?", (h,)).fetchone()
            if row is None or row["status"] in FINAL:
                return False
            if row["status"] == "running" and not self._stale(row, now) and not (
                row["host"] == host and row["pid"] == pid
            ):
                return False
            con.execute(
                "UPDATE runs SET status='running', host=?, pid=?, started=?, heartbeat=?, error=NULL WHERE hash=?",
                (host, pid, now, now, h),
            )
            return True

    @staticmethod
    def _stale(row, now) -> bool:
        if row["host"] == HOST and not _pid_alive(row["pid"]):
            return True
        return (now - (row["heartbeat"] or 0)) > STALE_SECONDS

    def heartbeat(self, hashes) -> None:
        hashes = list(hashes)
        if not hashes:
            return
        with self._tx() as con:
            con.executemany("UPDATE runs SET heartbeat=? WHERE hash=? AND status='running'",
                            [(time.time(), h) for h in hashes])

    def record_metrics(self, h: str, rows: list[dict]) -> None:
        """Store per-epoch metrics (replacing what was there for those epochs)."""
        with self._tx() as con:
            con.execute("DELETE FROM metrics WHERE hash=? AND epoch>?", (h, len(rows)))
            con.executemany(
                "INSERT OR REPLACE INTO metrics (hash, epoch, test_error, train_loss, data) VALUES (?,?,?,?,?)",
                [(h, int(r["epoch"]), r.get("test_error"), r.get("train_loss"), json.dumps(r, sort_keys=True))
                 for r in rows],
            )
            con.execute("UPDATE runs SET epochs=?, heartbeat=? WHERE hash=?", (len(rows), time.time(), h))

    def finish(self, h: str, status: str, summary: dict | None = None, error: str | None = None,
               host: str | None = None, seconds: float | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        summary = summary or {}
        with self._tx() as con:
            con.execute(
                "UPDATE runs SET status=?, finished=?, seconds=?, epochs=COALESCE(?, epochs), test_error=?, "
                "error=?, summary=?, host=COALESCE(?, host), pid=NULL WHERE hash=?",
                (status, time.time(), seconds if seconds is not None else summary.get("seconds"),
                 summary.get("epochs"), summary.get("test_error"), error,
                 json.dumps(summary, sort_keys=True, default=str) if summary else None, host, h),
            )

    def release(self, h: str) -> None:
        """Give a claimed, unfinished run back (e.g. the sweep stopped before it started)."""
        with self._tx() as con:
            con.execute("UPDATE runs SET status='interrupted', pid=NULL WHERE hash=? AND status='running'", (h,))

    # ------------------------------------------------------------------ reading
    def runs(self, spec: str | None = None, status=None, **where) -> list[dict]:
        """Runs as dicts (``config`` and ``summary`` decoded), optionally filtered."""
        sql = "SELECT r.* FROM runs r"
        args: list = []
        conds = []
        if spec is not None:
            sql += " JOIN spec_runs s ON s.hash = r.hash"
            conds.append("s.spec = ?")
            args.append(spec)
        if status:
            status = [status] if isinstance(status, str) else list(status)
            conds.append(f"r.status IN ({','.join('?' * len(status))})")
            args += status
        for k, v in where.items():
            if k not in COLUMNS and k != "hash":
                raise UserError(f"filter: unknown column {k!r}; accepted: hash, status, spec, {', '.join(COLUMNS)}")
            if k == "hash":
                conds.append("r.hash LIKE ?")
                args.append(f"{v}%")
            elif v is None:
                conds.append(f"r.{k} IS NULL")
            else:
                conds.append(f"r.{k} = ?")
                args.append(v)
        if conds:
            sql += " WHERE " + " AND ".join(conds)
        sql += " ORDER BY r.dataset, r.rule, r.preset, r.update_noise, r.target_epsilon, r.seed, r.hash"
        return [_decode(row) for row in self._con.execute(sql, args)]

    def get(self, h: str) -> dict | None:
        rows = self.runs(hash=h)
        if len(rows) > 1:
            raise UserError(f"run: hash prefix {h!r} is ambiguous ({len(rows)} runs); give more characters")
        return rows[0] if rows else None

    def metrics(self, h: str) -> list[dict]:
        return [json.loads(r["data"]) for r in
                self._con.execute("SELECT data FROM metrics WHERE hash=? ORDER BY epoch", (h,))]

    def specs(self) -> list[str]:
        return [r[0] for r in self._con.execute("SELECT DISTINCT spec FROM spec_runs ORDER BY spec")]

    def counts(self, hashes=None) -> dict:
        rows = self._con.execute("SELECT hash, status FROM runs").fetchall()
        keep = set(hashes) if hashes is not None else None
        out: dict = {}
        for r in rows:
            if keep is None or r["hash"] in keep:
                out[r["status"]] = out.get(r["status"], 0) + 1
        return out


def _hashed(d: dict) -> dict:
    return {k: v for k, v in d.items()}


def _decode(row) -> dict:
    d = dict(row)
    d["config"] = json.loads(d["config"]) if d.get("config") else {}
    d["summary"] = json.loads(d["summary"]) if d.get("summary") else {}
    return d


EXPORT_FIELDS = ("hash", "status", *COLUMNS, "epochs", "test_error", "best_test_error", "seconds", "host",
                 "started", "finished", "error")


def export_csv(rows: list[dict]) -> str:
    """Runs as CSV text: the filter columns, status, timings, final numbers, then every config field."""
    cfg_keys = sorted({k for r in rows for k in r["config"]} - set(COLUMNS))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*EXPORT_FIELDS, *cfg_keys])
    for r in rows:
        vals = [r.get(k) if k != "best_test_error" else r["summary"].get("best_test_error") for k in EXPORT_FIELDS]
        cfgv = [json.dumps(r["config"].get(k)) if isinstance(r["config"].get(k), (list, dict))
                else r["config"].get(k) for k in cfg_keys]
        w.writerow(["" if v is None else v for v in [*vals, *cfgv]])
    return buf.getvalue()
