"""Real SIGKILLs for the resume tests: run ``onnxnas ARGV`` in a child, kill it once a checkpoint exists."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def kill_when_checkpointed(args: list[str], checkpoint: Path,
                           poll_s: float = 0.01) -> Callable[[], subprocess.CompletedProcess[str]]:
    """SIGKILL ``onnxnas ARGS`` (no cleanup runs) as soon as ``checkpoint`` appears; returns the rerun with
    ``--resume``, to call once the caller has looked at what the kill left. Fails if the first run finished
    before it could be killed."""
    argv = [sys.executable, "-m", "onnxnas", *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(poll_s)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"'onnxnas {args[0]}' finished before it could be killed"
    return lambda: subprocess.run(argv + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
