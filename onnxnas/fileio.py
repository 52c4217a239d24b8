"""Atomic file writes: a temp file in the target folder, fsync, then rename.

A reader (or a killed writer) never sees a half-written artefact.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from onnxnas.errors import OnnxNasError


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise OnnxNasError(f"cannot write: {exc.strerror}", where=str(target),
                           fix="choose a writable output path") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; give the file the mode open() would
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def current_umask() -> int:
    """The process umask (reading it means setting it, so set it straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike[str], what: str = "JSON file") -> Any:
    """Load JSON, turning a missing or malformed file into a one-line user error."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise OnnxNasError(f"{what} not found", where=str(source), fix="check the path") from exc
    except OSError as exc:
        raise OnnxNasError(f"cannot read {what}: {exc.strerror}", where=str(source)) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise OnnxNasError(f"malformed {what} at line {exc.lineno} column {exc.colno}: {exc.msg}",
                           where=str(source), fix="repair or regenerate the file") from exc


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (engines and ONNX files can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
