"""The timing-backend protocol shared by every backend.

A backend turns one :class:`TimingJob` (a block at its in-network shape) into one
:class:`Measurement`. Backends raise on failure; the LUT builder records the error
text, never a zero latency.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

PRECISIONS = ("fp32", "fp16", "int8")
MAX_RUNS = 1_000_000  # timed or warm-up runs per block, from a flag or a table header; past this a build runs for hours


@dataclasses.dataclass(frozen=True)
class TimingProtocol:
    """How a measurement is taken; recorded in the LUT header."""

    warmup_runs: int = 20
    runs: int = 200
    min_time_s: float = 0.05  # keep running until at least this long has been measured
    statistic: str = "median"
    batch_size: int = 1
    threads: int = 1  # CPU backends only
    pin_cpus: bool = True  # CPU backends: run on the last `threads` allowed cores (CPU 0 takes interrupts)
    canary_gate: bool = True  # CPU backends: keep samples taken at full machine speed (see timing/canary.py)

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Measurement:
    """Latency statistics of one timed block, in microseconds."""

    median_us: float
    p10_us: float
    p90_us: float
    count: int

    @classmethod
    def from_samples(cls, samples_us: Sequence[float]) -> "Measurement":
        if not samples_us:
            raise ValueError("no timing samples")
        ordered = sorted(samples_us)
        deciles = statistics.quantiles(ordered, n=10, method="inclusive") if len(ordered) > 1 else [ordered[0]] * 9
        return cls(median_us=statistics.median(ordered), p10_us=deciles[0], p90_us=deciles[-1], count=len(ordered))

    def to_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class TimingJob:
    """One thing to time: a module factory, its input shape, and where its ONNX goes."""

    key: str
    build_module: Callable[[], torch.nn.Module]
    input_shape: tuple[int, ...]
    precision: str
    onnx_path: Path


@runtime_checkable
class TimingBackend(Protocol):
    """What the LUT builder, `lut validate` and `onnxnas bench` need from a backend."""

    name: str

    def version(self) -> str:
        """Software version string recorded in the LUT header."""

    def measure(self, job: TimingJob, protocol: TimingProtocol) -> Measurement:
        """Time one job; raise on failure."""

    def measure_onnx(self, onnx_path: Path, protocol: TimingProtocol) -> Measurement:
        """Time an already-exported ONNX model (end-to-end validation, `bench`)."""
