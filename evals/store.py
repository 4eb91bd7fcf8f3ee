"""Crash-safe storage of eval rows: an append-only JSONL file plus one trace file per row.

A row is written as one ``write`` of ``json + "\\n"``, then flushed and fsynced, so after a
SIGKILL or power loss every row already reported is on disk and at most the last line is
torn. ``RowStore.open`` cuts a torn tail (a last line without its newline) before anything
is appended, so a resumed run never glues a new row onto half an old one, and it refuses
to run while another process holds the run directory (``filelock``).

Traces are large; each goes to ``traces/<sha1 of row key>.json`` (written to a temporary
file and renamed, so it is whole or absent) *before* its row, so a row never points at a
missing trace.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ttscale.errors import ConfigError

__all__ = [
    "ROWS_FILE",
    "RowStore",
    "append_jsonl",
    "atomic_write_text",
    "read_jsonl",
    "read_rows",
    "row_key",
]

log = logging.getLogger(__name__)

ROWS_FILE = "rows.jsonl"
TRACES_DIR = "traces"


def row_key(problem_id: str, strategy: str, budget: str, seed: int) -> str:
    """Identity of a row: one per (problem, strategy label, budget, seed)."""
    return json.dumps([problem_id, strategy, budget, seed], ensure_ascii=False)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file + rename (whole or absent)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _repair_tail(path: Path) -> int:
    """Truncate a torn last line (no trailing newline); returns bytes removed."""
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return 0
        # Scan back for the last newline in chunks.
        pos, keep = size, 0
        while pos > 0:
            step = min(65536, pos)
            pos -= step
            f.seek(pos)
            chunk = f.read(step)
            i = chunk.rfind(b"\n")
            if i != -1:
                keep = pos + i + 1
                break
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return size - keep


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of an append-only JSONL file other than a run's (calibration and benchmark rows),
    after cutting a torn last line so the next ``append_jsonl`` starts on a fresh line.
    A missing file has no rows.

    Raises:
        ConfigError: A complete line is not JSON (names the file and line).
    """
    if not path.is_file():
        return []
    _repair_tail(path)
    out = []
    for lineno, raw in enumerate(path.read_bytes().split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            out.append(json.loads(raw))
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{path}:{lineno}: not a JSON row ({exc.msg}); delete that line and rerun to "
                f"redo it"
            ) from None
    return out


def append_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append ``rows`` in one write, then flush and fsync: on disk once this returns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())


def read_rows(run_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of a run, first occurrence of each key; a torn last line is ignored.

    Raises:
        ConfigError: The run has no rows file, or a complete line is not JSON (the file was
            edited or corrupted; the message names the line).
    """
    path = Path(run_dir) / ROWS_FILE
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; run `ttscale eval --out {run_dir}` first")
    return list(_iter_rows(path))


def _iter_rows(path: Path) -> Iterator[dict[str, Any]]:
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1] != b"":
        lines = lines[:-1]  # torn tail: not a finished row
    seen: set[str] = set()
    for lineno, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{path}:{lineno}: not a JSON row ({exc.msg}); the file was edited or "
                f"corrupted: delete that line and rerun the same command to redo it"
            ) from None
        if row["key"] in seen:
            log.warning("%s:%d: duplicate row %s ignored", path, lineno, row["key"])
            continue
        seen.add(row["key"])
        yield row


class RowStore:
    """The rows and traces of one run directory, held open by one writer."""

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir)
        self.path = self.dir / ROWS_FILE
        self.traces = self.dir / TRACES_DIR
        self._lock = FileLock(str(self.dir / ".lock"))
        self._file: Any = None
        self.rows: dict[str, dict[str, Any]] = {}

    def open(self) -> RowStore:
        """Lock the directory, repair a torn tail, load finished rows."""
        self.traces.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise ConfigError(
                f"{self.dir} is in use by another `ttscale eval`; wait for it or pick another --out"
            ) from None
        cut = _repair_tail(self.path)
        if cut:
            log.warning(
                "%s: dropped a torn last line (%d bytes) from an interrupted run", self.path, cut
            )
        if self.path.exists():
            self.rows = {r["key"]: r for r in _iter_rows(self.path)}
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        return self

    def __enter__(self) -> RowStore:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._lock.is_locked:
            self._lock.release()

    def trace_path(self, key: str) -> Path:
        return self.traces / f"{hashlib.sha1(key.encode()).hexdigest()}.json"

    def append(self, row: dict[str, Any], trace: dict[str, Any] | None = None) -> None:
        """Persist one finished row (and its trace first); durable when this returns."""
        key = row["key"]
        if key in self.rows:
            return  # never duplicate
        if trace is not None:
            tpath = self.trace_path(key)
            atomic_write_text(tpath, json.dumps(trace, ensure_ascii=False, default=str))
            row["trace"] = str(tpath.relative_to(self.dir))
        line = json.dumps(row, ensure_ascii=False, default=str) + "\n"
        self._file.write(line)
        self._file.flush()
        os.fsync(self._file.fileno())
        self.rows[key] = row
