"""ONNX Runtime backend: the embedded default, runs anywhere ``pip install onnxnas`` does.

The session is pinned (fixed thread count, sequential execution, full graph
optimization) so that two tables built on the same machine agree. Inputs and outputs
are bound once through IOBinding, so a GPU provider times compute, not copies.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort

from onnxnas.errors import OnnxNasError
from onnxnas.timing.base import Measurement, TimingProtocol
from onnxnas.timing.canary import Canary, canary_model
from onnxnas.timing.onnx_file import OnnxFileBackend

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
MAX_RUNS_FACTOR = 20  # stop after runs * this many samples even if min_time_s is not reached
MAX_GATED_WAIT_S = 10.0  # how long the canary gate may wait for the machine to run at full speed
GATE_EVERY = 8  # samples per canary check


class OnnxRuntimeBackend(OnnxFileBackend):
    """Times ONNX models with ONNX Runtime: warm-up, then per-call wall time, median."""

    name = "onnxruntime"

    def __init__(self, threads: int = 1, provider: str | None = None):
        if threads < 1:
            raise OnnxNasError(f"threads must be >= 1, got {threads}", fix="pass a positive thread count")
        self.threads = threads
        self.provider = _resolve_provider(provider)
        self._canary_gate: Canary | None = None

    def version(self) -> str:
        return f"{ort.__version__} ({self.provider})"

    def _measure(self, onnx_path: Path, protocol: TimingProtocol, precision: str) -> Measurement:
        return self._measure_model(str(onnx_path), protocol, where=str(onnx_path))  # precision is in the graph

    def _measure_model(self, model: str | bytes, protocol: TimingProtocol, where: str) -> Measurement:
        if protocol.threads != self.threads:
            raise OnnxNasError(
                f"the timing protocol asks for {protocol.threads} CPU threads but the backend runs {self.threads}",
                fix="create OnnxRuntimeBackend(threads=protocol.threads)",
            )
        on_cpu = self.provider == PROVIDERS["cpu"]
        try:
            with pinned_cpus(self.threads if protocol.pin_cpus and on_cpu else 0):
                canary = self._canary() if protocol.canary_gate and on_cpu else None
                return time_calls(_bound_run(self._session(model), self.provider), protocol, canary)
        except OnnxNasError:
            raise
        except Exception as exc:  # ORT's exception types share no base but Exception
            raise _ort_error(exc, self.provider, where) from exc

    def _canary(self) -> Canary:
        """One canary per backend, so its full-speed floor carries over from key to key."""
        if self._canary_gate is None:
            self._canary_gate = Canary(_bound_run(self._session(canary_model()), self.provider))
        return self._canary_gate

    def _session(self, model: str | bytes) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = self.threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only; warnings would flood a LUT build
        session = ort.InferenceSession(model, options, providers=[self.provider])
        if self.provider not in session.get_providers():
            raise OnnxNasError(f"ONNX Runtime could not start {self.provider} (it fell back to "
                               f"{', '.join(session.get_providers())})",
                               fix="check the CUDA/cuDNN/TensorRT libraries onnxruntime-gpu needs")
        return session


@contextlib.contextmanager
def pinned_cpus(count: int) -> Iterator[None]:
    """Run the calling thread (and threads it starts, e.g. ORT's pool) on the last ``count`` allowed cores.

    Unpinned timings on a 2-core machine swung by up to 40% from session to session as the
    thread moved onto the core that serves interrupts; pinned ones agree within ~1%.
    ``count`` 0, or a platform without affinity, leaves scheduling alone.
    """
    if count <= 0 or not hasattr(os, "sched_setaffinity"):
        yield
        return
    allowed = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, allowed[-count:])
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


def time_calls(call: Callable[[], object], protocol: TimingProtocol, canary: Canary | None = None) -> Measurement:
    """Warm up, then time single blocking calls until ``runs`` samples and ``min_time_s`` are kept.

    ``runs`` is a minimum (the CLI calls it ``--min-runs``): a 60 us model needs ~830 calls to
    fill 0.05 s, and a median of fewer samples of a block that short moves with timer and
    cache noise. So ``--min-runs 20`` of a 500 us model keeps 96 samples (0.05 s in batches of
    8), and the count is always reported. At most ``runs x MAX_RUNS_FACTOR`` samples are kept.

    With a ``canary``, samples come in batches of ``GATE_EVERY`` and a batch is kept only if
    the canary timed right after it ran at full speed (slow spells last far longer than a
    batch). Should the machine stay slow for ``MAX_GATED_WAIT_S``, every sample counts: the
    result then describes the slower machine, which is still a real measurement.
    """
    for _ in range(protocol.warmup_runs):
        call()
    kept_us: list[float] = []
    every_us: list[float] = []
    min_us = protocol.min_time_s * 1e6
    cap = max(protocol.runs, 1) * MAX_RUNS_FACTOR
    deadline = time.monotonic() + MAX_GATED_WAIT_S
    while len(kept_us) < cap and (len(kept_us) < protocol.runs or sum(kept_us) < min_us):
        batch = []
        for _ in range(GATE_EVERY if canary else 1):
            start = time.perf_counter_ns()
            call()
            batch.append((time.perf_counter_ns() - start) / 1000.0)
        every_us += batch
        if canary is None or canary.quiet():
            kept_us += batch
        elif time.monotonic() > deadline:
            return Measurement.from_samples(every_us[:cap])
    return Measurement.from_samples(kept_us[:cap])


def _resolve_provider(provider: str | None) -> str:
    name = PROVIDERS.get(provider or "cpu", provider or "cpu")
    available = ort.get_available_providers()
    if name not in available:
        known = sorted(set(PROVIDERS) | set(PROVIDERS.values()))
        if name not in PROVIDERS.values():
            raise OnnxNasError(f"unknown ONNX Runtime provider {provider!r}", fix=f"use one of: {', '.join(known)}")
        raise OnnxNasError(f"ONNX Runtime provider {name} is not available (installed: {', '.join(available)})",
                           fix="pip install onnxruntime-gpu (in place of onnxruntime), or use --device cpu")
    return name


def _bound_run(session: ort.InferenceSession, provider: str) -> Callable[[], None]:
    """Bind random inputs and device-side outputs once; return a zero-argument run."""
    device = "cpu" if provider == "CPUExecutionProvider" else "cuda"
    rng = np.random.default_rng(0)
    binding = session.io_binding()
    for arg in session.get_inputs():
        if not all(isinstance(dim, int) for dim in arg.shape):
            raise OnnxNasError(f"input {arg.name!r} has a dynamic shape {arg.shape}",
                               fix="export with a static input shape (batch included)")
        if arg.type not in _NUMPY_TYPES:
            raise OnnxNasError(f"input {arg.name!r} has type {arg.type}; only float and float16 inputs are timed")
        data = rng.standard_normal(arg.shape).astype(_NUMPY_TYPES[arg.type])
        binding.bind_ortvalue_input(arg.name, ort.OrtValue.ortvalue_from_numpy(data, device, 0))
    for out in session.get_outputs():
        binding.bind_output(out.name, device)

    def run() -> None:
        session.run_with_iobinding(binding)

    return run


def _ort_error(exc: Exception, provider: str, where: str) -> OnnxNasError:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return OnnxNasError(f"ONNX Runtime ({provider}) cannot run the model: {detail}", where=where)
