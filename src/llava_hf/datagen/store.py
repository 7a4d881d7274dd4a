"""Append-only JSONL output keyed by (image id, type, sample index): what makes a killed run safe to restart.

An output folder holds

- `instructions.jsonl`: accepted records (LLaVA `id`, `image`, `conversations`, plus the key fields, the model,
  the finish reason and the token usage);
- `rejected.jsonl`: responses that did not validate, with the reason and the raw text;
- `failed.jsonl`: requests that still failed after every retry (a log only: they are tried again on the next run).

A key found in `instructions.jsonl` or `rejected.jsonl` is done, and a restarted run skips it. Each line is written
with a single `os.write` on a file opened with `O_APPEND`, so a killed process leaves at most one incomplete last
line; on open, that line is cut off (and counted) and its key is generated again. Nothing is lost (a key is done only
once its line is complete) and nothing is duplicated (complete keys are skipped). An exclusive lock on `.lock` keeps
two runs from writing the same folder at once; the operating system releases it when the process dies.
"""

import json
import logging
import os
from pathlib import Path
from typing import Any

from ..utils import iter_jsonl, repair_torn_tail

logger = logging.getLogger(__name__)

RECORDS = "instructions.jsonl"
REJECTED = "rejected.jsonl"
FAILED = "failed.jsonl"
REPORT = "report.json"

Key = tuple[str, str, int]


def record_key(row: dict[str, Any]) -> Key:
    return (str(row["image_id"]), str(row["type"]), int(row["sample_index"]))


class InstructionStore:
    """The output folder: done keys, and line-atomic appends to the three JSONL files."""

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self.done: set[Key] = set()
        self.torn_lines = 0
        self.duplicates = 0
        self._fds: dict[str, int] = {}
        self._lock_fd: int | None = None

    def open(self) -> "InstructionStore":
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        for name in (RECORDS, REJECTED):
            path = self.out_dir / name
            if repair_torn_tail(path):
                self.torn_lines += 1
                logger.warning("%s: cut an incomplete last line left by a killed run; its record is redone.", path)
        repair_torn_tail(self.out_dir / FAILED)  # a log only: a torn entry there loses nothing
        for name in (RECORDS, REJECTED):
            if not (self.out_dir / name).is_file():
                continue
            for _, row in iter_jsonl(self.out_dir / name, skip_torn_tail=True):
                key = record_key(row)
                if key in self.done:
                    self.duplicates += 1
                self.done.add(key)
        if self.duplicates:
            logger.warning(
                "%s: %d keys appear more than once (kept once on conversion).", self.out_dir, self.duplicates
            )
        for name in (RECORDS, REJECTED, FAILED):
            self._fds[name] = os.open(self.out_dir / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # Windows: no lock, one run per folder is up to the user
            return
        self._lock_fd = os.open(self.out_dir / ".lock", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise RuntimeError(
                f"{self.out_dir} is in use by another generate-instructions run; wait for it or use another --out."
            ) from error

    def _append(self, name: str, row: dict[str, Any]) -> None:
        data = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        fd = self._fds[name]
        written = os.write(fd, data)  # one call: with O_APPEND the line lands whole unless the disk is full
        while written < len(data):  # a short write (disk full, signal): finish the line rather than leave it torn
            written += os.write(fd, data[written:])

    def write_record(self, row: dict[str, Any]) -> None:
        self._append(RECORDS, row)
        self.done.add(record_key(row))

    def write_rejection(self, row: dict[str, Any]) -> None:
        self._append(REJECTED, row)
        self.done.add(record_key(row))

    def write_failure(self, row: dict[str, Any]) -> None:
        self._append(FAILED, row)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the lock
            self._lock_fd = None

    def __enter__(self) -> "InstructionStore":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
