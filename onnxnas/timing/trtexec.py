"""trtexec backend: the paper's protocol, literally (median GPU compute time, batch 1).

Batch 1 comes from the ONNX's static input shape. Up to TensorRT 10 the command
asks for CUDA graphs, no data transfers and spin-wait and passes ``--fp16``/``--int8``;
trtexec 11 has those three on by default (the old flags only print deprecation
warnings) and is strongly typed, so precision comes from the ONNX.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from onnxnas.errors import OnnxNasError
from onnxnas.timing.base import Measurement, TimingProtocol
from onnxnas.timing.onnx_file import OnnxFileBackend
from onnxnas.timing.tensorrt import major_version, precision_flags

INSTALL_FIX = "install TensorRT and put the folder holding trtexec on PATH, or use --backend tensorrt"
_NUMBER = r"([0-9.]+(?:[eE][-+]?[0-9]+)?)"
_GPU_LINE = re.compile(r"(?<!Total )GPU Compute Time: (min\s*=.*)$", re.MULTILINE)
_STAT = re.compile(r"(min|max|mean|median|percentile\(([0-9.]+)%\))\s*=?\s*" + _NUMBER + r" ms")
_TRACE = re.compile(r"Timing trace has (\d+) queries")
_BANNER = re.compile(r"\[TensorRT v(\d+)\]")


def parse_trtexec_report(text: str) -> Measurement:
    """The "GPU Compute Time" statistics of a trtexec log, in microseconds.

    p10/p90 are read from ``percentile(10%)``/``percentile(90%)`` (this backend passes
    ``--percentile=10,90``). A log run without them (trtexec's default is 90,95,99, or
    99 alone before 8.6) gives bounds instead: min for p10, and for p90 the lowest
    reported percentile at or above 90.
    """
    lines = _GPU_LINE.findall(text)
    if not lines:
        raise OnnxNasError("trtexec output has no 'GPU Compute Time: min = ...' line",
                           where="trtexec report", fix="check the trtexec log; inference may have been skipped")
    stats: dict[str, float] = {}
    percentiles: dict[float, float] = {}
    for key, pct, value in _STAT.findall(lines[-1]):
        if pct:
            percentiles[float(pct)] = float(value)
        else:
            stats[key] = float(value)
    missing = [key for key in ("min", "max", "median") if key not in stats]
    if missing:
        raise OnnxNasError(f"trtexec 'GPU Compute Time' line lacks {', '.join(missing)}: {lines[-1].strip()}",
                           where="trtexec report")
    trace = _TRACE.findall(text)
    if not trace:
        raise OnnxNasError("trtexec output has no 'Timing trace has N queries' line", where="trtexec report")
    p10 = percentiles.get(10.0, stats["min"])
    p90 = percentiles.get(90.0, min((v for p, v in percentiles.items() if p >= 90.0), default=stats["max"]))
    return Measurement(median_us=stats["median"] * 1000.0, p10_us=p10 * 1000.0, p90_us=p90 * 1000.0,
                       count=int(trace[-1]))


def parse_trtexec_version(text: str) -> str:
    """'8.6.1' from trtexec's '&&&& RUNNING TensorRT.trtexec [TensorRT v8601]' banner.

    The number is major*1000+minor*100+patch up to TensorRT 9 and major*10000+minor*100+patch
    from TensorRT 10 on.
    """
    found = _BANNER.search(text)
    if not found:
        raise OnnxNasError("trtexec printed no '[TensorRT vNNNN]' banner", where="trtexec --help")
    number = int(found.group(1))
    major, rest = divmod(number, 10000 if number >= 100000 else 1000)
    minor, patch = divmod(rest, 100)
    return f"{major}.{minor}.{patch}"


class TrtexecBackend(OnnxFileBackend):
    """Runs ``trtexec`` once per ONNX model and parses its performance summary."""

    name = "trtexec"

    def __init__(
        self,
        timing_cache: Path | None = None,
        *,
        binary: str = "trtexec",
        precision: str = "fp32",
        warmup_ms: float = 200.0,
        extra_args: Sequence[str] = (),
        timeout_s: float = 900.0,
    ):
        found = shutil.which(binary)
        if found is None:
            raise OnnxNasError(f"trtexec not found ({binary!r} is not on PATH)", fix=INSTALL_FIX)
        precision_flags(precision, 11)  # validates the name
        self.binary = found
        self.timing_cache = Path(timing_cache) if timing_cache is not None else None
        self.precision = precision
        self.warmup_ms = warmup_ms  # trtexec warms up for a time, not a number of runs
        self.extra_args = tuple(extra_args)
        self.timeout_s = timeout_s
        self._version: str | None = None

    def version(self) -> str:
        if self._version is None:
            self._version = parse_trtexec_version(self._run([self.binary, "--help"], where="trtexec --help"))
        return self._version

    def command(self, onnx_path: Path, protocol: TimingProtocol, precision: str) -> list[str]:
        """The exact trtexec command line for one measurement (also shown in errors)."""
        major = major_version(self.version())
        args = [
            self.binary,
            f"--onnx={onnx_path}",
            f"--warmUp={self.warmup_ms:g}",
            f"--iterations={max(protocol.runs, 1)}",
            f"--duration={protocol.min_time_s:g}",
            "--percentile=10,90",
        ]
        if major >= 11:
            args.append("--stronglyTyped")
        else:
            args += ["--useCudaGraph", "--noDataTransfers", "--useSpinWait"]
            args += [f"--{flag.lower()}" for flag in precision_flags(precision, major)]
        if self.timing_cache is not None:
            args.append(f"--timingCacheFile={self.timing_cache}")
        return [*args, *self.extra_args]

    def _measure(self, onnx_path: Path, protocol: TimingProtocol, precision: str) -> Measurement:
        if self.timing_cache is not None:
            self.timing_cache.parent.mkdir(parents=True, exist_ok=True)
        output = self._run(self.command(onnx_path, protocol, precision), where=str(onnx_path))
        return parse_trtexec_report(output)

    def _run(self, command: list[str], where: str) -> str:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=self.timeout_s, check=False)
        except FileNotFoundError as exc:
            raise OnnxNasError(f"cannot run {command[0]}", fix=INSTALL_FIX) from exc
        except subprocess.TimeoutExpired as exc:
            raise OnnxNasError(f"trtexec did not finish within {self.timeout_s:g} s", where=where) from exc
        if done.returncode != 0:
            tail = _tail(done.stderr) or _tail(done.stdout)
            raise OnnxNasError(f"trtexec exited with status {done.returncode}: {tail}", where=where)
        return done.stdout + done.stderr


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])
