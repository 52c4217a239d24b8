"""Files in and out: atomic writes, and bounded, checked reads.

Writes go to a temp file in the target folder, fsync, then rename, so a reader (or a killed
writer) never sees a half-written artefact. Reads accept regular files of bounded size only
and turn every decode failure into one :class:`OnnxNasError` line.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import yaml

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
    except OSError as exc:  # a full disk, a directory in the way: the user's to fix, not a traceback
        Path(tmp).unlink(missing_ok=True)
        raise OnnxNasError(f"cannot write: {exc.strerror}", where=str(target),
                           fix="free disk space or choose another output path (not an existing folder)") from exc
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
    """Strict JSON: a NaN or infinity that reached here is a bug and must not ship as invalid JSON."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


MAX_DOCUMENT_BYTES = 64 << 20  # LUTs, archs, spaces, manifests: far below this; /dev/zero is not
MAX_YAML_ALIASES = 100  # built-in spaces use a handful; a billion-laughs document needs thousands


def read_regular_bytes(path: str | os.PathLike[str], what: str, max_bytes: int = MAX_DOCUMENT_BYTES) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; anything else is a one-line user error.

    Opened non-blocking and checked with fstat, so a FIFO, a device or a directory is refused
    instead of hanging or reading forever.
    """
    source = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError as exc:
        raise OnnxNasError(f"{what} not found", where=source, fix="check the path") from exc
    except OSError as exc:
        raise OnnxNasError(f"cannot read {what}: {exc.strerror}", where=source, fix="check the path and its permissions") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OnnxNasError(f"{what} is not a regular file", where=source, fix="pass the path of a file")
        if info.st_size > max_bytes:
            raise OnnxNasError(f"{what} is {info.st_size} bytes, more than the {max_bytes} this reader accepts",
                               where=source, fix="check that this is the right file")
        chunks, size = [], 0
        while size <= max_bytes and (chunk := os.read(fd, 1 << 20)):
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    except OSError as exc:
        raise OnnxNasError(f"cannot read {what}: {exc.strerror}", where=source) from exc
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise OnnxNasError(f"{what} grew past {max_bytes} bytes while being read", where=source)
    return data


def read_text(path: str | os.PathLike[str], what: str, max_bytes: int = MAX_DOCUMENT_BYTES) -> str:
    data = read_regular_bytes(path, what, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OnnxNasError(f"{what} is not UTF-8 text (bad byte at offset {exc.start})", where=str(path),
                           fix="repair or regenerate the file") from exc


def parse_json(text: str | bytes, what: str, source: str) -> Any:
    """JSON with every decode failure as a one-line error; NaN and Infinity are not JSON and are refused."""
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise OnnxNasError(f"malformed {what} at line {exc.lineno} column {exc.colno}: {exc.msg}",
                           where=source, fix="repair or regenerate the file") from exc
    except RecursionError as exc:
        raise OnnxNasError(f"malformed {what}: nested too deeply", where=source, fix="repair or regenerate the file") from exc
    except (ValueError, UnicodeDecodeError) as exc:  # a non-finite constant, an integer of thousands of digits
        reason = str(exc).splitlines()[0].split("; use sys.")[0]
        raise OnnxNasError(f"malformed {what}: {reason}", where=source, fix="repair or regenerate the file") from exc


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses to inf
        raise ValueError(f"{text} is not a finite number")
    return value


def read_json(path: str | os.PathLike[str], what: str = "JSON file") -> Any:
    """Load a JSON document through :func:`read_text`'s checks and :func:`parse_json`'s."""
    return parse_json(read_text(path, what), what, str(path))


def parse_yaml(text: str, what: str, source: str) -> Any:
    """Safe YAML (no tags that build objects) with a bound on alias expansion."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise OnnxNasError(f"malformed {what}: {str(exc).splitlines()[0]}", where=source,
                           fix="repair the file") from exc
    except RecursionError as exc:
        raise OnnxNasError(f"malformed {what}: nested too deeply", where=source, fix="repair the file") from exc
    finally:
        loader.dispose()


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses documents using more than MAX_YAML_ALIASES aliases (billion laughs)."""

    aliases_seen = 0

    def compose_node(self, parent: Any, index: Any) -> Any:  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            self.aliases_seen += 1
            if self.aliases_seen > MAX_YAML_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_YAML_ALIASES} aliases (an exploding document?)")
        return super().compose_node(parent, index)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (engines and ONNX files can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
