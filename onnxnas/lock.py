"""One writer per output: an exclusive, non-blocking lock held for a whole run.

Two runs on the same ``--out`` would interleave journal lines and checkpoints silently.
The lock is an advisory ``flock`` on a small file beside the output; the kernel drops it
when the process dies (SIGKILL included), so a killed run never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from onnxnas.errors import OnnxNasError


@contextlib.contextmanager
def exclusive_output(lock_path: Path, what: str) -> Iterator[None]:
    """Hold ``lock_path`` for the block; a second holder fails at once with one line."""
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise OnnxNasError(f"cannot create the lock file: {exc.strerror}", where=str(lock_path),
                           fix="choose a writable --out") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise OnnxNasError(f"another onnxnas run is writing this {what}", where=str(lock_path.parent),
                               fix="wait for it to finish, or pass another --out") from exc
        yield
    finally:
        os.close(fd)
