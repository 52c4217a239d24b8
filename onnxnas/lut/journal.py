"""Append-only build journal: an identity line, then one fsynced JSON line per finished key.

A killed build loses at most the key it was timing. On reopen every line is validated
with the table's own entry schema. A bad line is reported with its file and line number
and skipped, never truncated at, so the good lines after it are kept; a torn last line
(the kill) is dropped. When anything was dropped, or the identity line is missing, empty
or torn, the journal is rewritten atomically with its identity line and every good line,
so the next kill still leaves a resumable journal.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any

from onnxnas.errors import OnnxNasError
from onnxnas.fileio import atomic_write_bytes, parse_json, read_regular_bytes
from onnxnas.lut.table import LutEntry, parse_entry

JOURNAL_VERSION = 1


class Journal:
    """Context manager over ``path``; ``identity`` must match for a journal to be resumed.

    ``expected_keys`` are the keys this build times: a journal whose identity line was lost
    is adopted only if all its entries are among them.
    """

    def __init__(self, path: Path, identity: dict[str, Any], expected_keys: Collection[str] | None = None):
        self.path = path
        self.identity = identity
        self.expected_keys = expected_keys
        self._handle: Any = None

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def read(self) -> dict[str, LutEntry]:
        """Entries finished by earlier runs; creates (or repairs) the journal as needed."""
        if not self.path.exists():
            self._rewrite([])
            return {}
        lines = read_regular_bytes(self.path, "build journal").splitlines(keepends=True)
        entries: dict[str, LutEntry] = {}
        kept: list[bytes] = []
        has_identity = dropped = False
        for number, raw in enumerate(lines, start=1):
            try:
                entry = self._parse_line(raw, number)
            except ValueError as exc:
                print(f"onnxnas: warning: {self.path}:{number}: {exc}; line skipped, its key will be timed again",
                      file=sys.stderr)
                dropped = True
                continue
            if entry is None:
                has_identity = True
                continue
            entries.setdefault(entry.key, entry)
            kept.append(raw)
        if not has_identity:
            self._adopt(entries)
        if dropped or not has_identity:
            self._rewrite(kept)
        return entries

    def _parse_line(self, raw: bytes, number: int) -> LutEntry | None:
        """The line's entry, or None for the identity line; a bad line raises ValueError (its reason)."""
        where = f"{self.path}:{number}"
        if not raw.endswith(b"\n"):
            raise ValueError("truncated line (the build was killed while writing it)")
        try:
            record = parse_json(raw, "journal line", where)
        except OnnxNasError as exc:
            raise ValueError(_reason(exc)) from exc
        if number == 1 and isinstance(record, dict) and "journal" in record:
            self._check_identity(record)
            return None
        if not isinstance(record, dict) or "key" not in record:
            raise ValueError("line is not a LUT entry")
        data = dict(record)
        try:
            return parse_entry(data.pop("key"), data, "$", where)
        except OnnxNasError as exc:
            raise ValueError(_reason(exc)) from exc

    def _check_identity(self, record: dict[str, Any]) -> None:
        if record.get("journal") != JOURNAL_VERSION:
            raise OnnxNasError(f"unsupported build journal version {record.get('journal')!r}", where=str(self.path),
                               fix="delete it to start over, or pass another --out")
        if record.get("identity") != self.identity:
            found = record.get("identity") if isinstance(record.get("identity"), dict) else {}
            raise OnnxNasError(f"journal belongs to another build ({_diff(found, self.identity)})", where=f"{self.path}:1",
                               fix="rerun with the journal's settings, or delete the journal to start over")

    def _adopt(self, entries: dict[str, LutEntry]) -> None:
        """A journal without its identity line is this build's only if every key is one it times."""
        foreign = sorted(set(entries) - set(self.expected_keys or ()))
        if self.expected_keys is not None and foreign:
            raise OnnxNasError(f"journal has no identity line and holds {len(foreign)} key(s) this build does not "
                               f"time (e.g. {foreign[0]})", where=str(self.path),
                               fix="rerun with the settings that wrote it, or delete the journal to start over")
        print(f"onnxnas: warning: {self.path}:1: identity line missing or torn; rewritten, "
              f"{len(entries)} finished key(s) kept", file=sys.stderr)

    def append(self, entry: LutEntry) -> None:
        self._write_line({"key": entry.key, **entry.to_dict()})

    def _line(self, record: dict[str, Any]) -> bytes:
        return (json.dumps(record, sort_keys=True, allow_nan=False) + "\n").encode()

    def _rewrite(self, lines: list[bytes]) -> None:
        """Replace the journal, atomically, by its identity line and ``lines``."""
        self.__exit__()
        identity = self._line({"journal": JOURNAL_VERSION, "identity": self.identity})
        atomic_write_bytes(self.path, identity + b"".join(lines))

    def _write_line(self, record: dict[str, Any]) -> None:
        try:
            if self._handle is None:
                self._handle = open(self.path, "ab")
            self._handle.write(self._line(record))
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as exc:
            raise OnnxNasError(f"cannot write the build journal: {exc.strerror or exc}", where=str(self.path),
                               fix="free disk space (or fix the folder), then rerun the same command; "
                                   "finished keys are kept") from exc

    def remove(self) -> None:
        self.__exit__()
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            raise OnnxNasError(f"cannot remove the finished build journal: {exc.strerror}", where=str(self.path),
                               fix="delete it by hand; the table is written") from exc


def _reason(exc: OnnxNasError) -> str:
    """The message of a line's error without its location and generic fix."""
    return str(exc).removeprefix(f"{exc.where}: ").split(" -- fix: ")[0]


def _diff(found: dict[str, Any], wanted: dict[str, Any]) -> str:
    fields = [k for k in sorted(set(found) | set(wanted)) if found.get(k) != wanted.get(k)]
    return "; ".join(f"{k}: {found.get(k)!r} there, {wanted.get(k)!r} now" for k in fields[:3])
