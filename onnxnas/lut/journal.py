"""Append-only build journal: one fsynced JSON line per finished key.

A killed build loses at most the key it was timing. On reopen, a corrupt or truncated
line is reported with its file and line number and the journal is cut back to the last
good line, so the build resumes from there without repeating any finished key.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from onnxnas.errors import OnnxNasError
from onnxnas.lut.table import LutEntry

JOURNAL_VERSION = 1


class Journal:
    """Context manager over ``path``; ``identity`` must match for a journal to be resumed."""

    def __init__(self, path: Path, identity: dict[str, Any]):
        self.path = path
        self.identity = identity
        self._handle: Any = None

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def read(self) -> dict[str, LutEntry]:
        """Entries finished by earlier runs; creates the journal (with its identity line) if absent."""
        if not self.path.exists():
            self._write_line({"journal": JOURNAL_VERSION, "identity": self.identity})
            return {}
        entries: dict[str, LutEntry] = {}
        good_bytes = 0
        with open(self.path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    record = self._parse(raw, number)
                except ValueError as exc:
                    print(f"onnxnas: warning: {self.path}:{number}: {exc}; resuming from the last good line "
                          f"({number - 1})", file=sys.stderr)
                    break
                if record is not None:
                    entries.setdefault(record.key, record)
                good_bytes += len(raw)
        if good_bytes < self.path.stat().st_size:
            with open(self.path, "r+b") as handle:
                handle.truncate(good_bytes)
        return entries

    def _parse(self, raw: bytes, number: int) -> LutEntry | None:
        if not raw.endswith(b"\n"):
            raise ValueError("truncated line (the build was killed while writing it)")
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"corrupt line ({exc})") from exc
        if number == 1:
            if not isinstance(record, dict) or record.get("journal") != JOURNAL_VERSION:
                raise OnnxNasError("not an onnxnas build journal", where=f"{self.path}:1",
                                   fix="delete it, or pass another --out")
            if record.get("identity") != self.identity:
                raise OnnxNasError(
                    f"journal belongs to another build ({_diff(record.get('identity') or {}, self.identity)})",
                    where=f"{self.path}:1", fix="rerun with the journal's settings, or delete the journal to start over")
            return None
        if not isinstance(record, dict) or "key" not in record:
            raise ValueError("line is not a LUT entry")
        try:
            return LutEntry.from_dict(record.pop("key"), record)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad entry ({exc})") from exc

    def append(self, entry: LutEntry) -> None:
        self._write_line({"key": entry.key, **entry.to_dict()})

    def _write_line(self, record: dict[str, Any]) -> None:
        if self._handle is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._handle = open(self.path, "ab")
            except OSError as exc:
                raise OnnxNasError(f"cannot write the build journal: {exc.strerror}", where=str(self.path),
                                   fix="choose a writable --out") from exc
        self._handle.write((json.dumps(record, sort_keys=True) + "\n").encode())
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def remove(self) -> None:
        self.__exit__()
        self.path.unlink(missing_ok=True)


def _diff(found: dict[str, Any], wanted: dict[str, Any]) -> str:
    fields = [k for k in sorted(set(found) | set(wanted)) if found.get(k) != wanted.get(k)]
    return "; ".join(f"{k}: {found.get(k)!r} there, {wanted.get(k)!r} now" for k in fields[:3])
