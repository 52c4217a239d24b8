"""PyTorch-on-CUDA backend: times the block module itself, no ONNX in between.

Useful where TensorRT is not installed, and as a cross-check of what the exporter
and TensorRT add. GPU time comes from CUDA events, as trtexec's "GPU Compute Time".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from onnxnas.errors import OnnxNasError
from onnxnas.timing.base import Measurement, TimingJob, TimingProtocol
from onnxnas.timing.onnxruntime import MAX_RUNS_FACTOR


class TorchCudaBackend:
    """Times ``job.build_module()`` on a CUDA device (channels-last, fp16 via ``.half()``)."""

    name = "torch-cuda"

    def __init__(self, device: int = 0, channels_last: bool = True):
        require_cuda("the torch-cuda backend")
        self.device = torch.device("cuda", device)
        self.channels_last = channels_last

    def version(self) -> str:
        return f"torch {torch.__version__}, CUDA {torch.version.cuda}"

    def measure(self, job: TimingJob, protocol: TimingProtocol) -> Measurement:
        if job.precision not in ("fp32", "fp16"):
            raise OnnxNasError(f"torch-cuda times fp32 and fp16 modules, not {job.precision}",
                               fix="use --backend tensorrt or trtexec for int8 (Q/DQ ONNX)")
        dtype = torch.float16 if job.precision == "fp16" else torch.float32
        module = job.build_module().eval().to(self.device, dtype)
        x = torch.randn(job.input_shape, device=self.device, dtype=dtype)
        if self.channels_last and x.dim() == 4:
            module = module.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.cuda.device(self.device), torch.inference_mode():
            return time_cuda(lambda: module(x), protocol, torch.cuda.Stream(self.device))

    def measure_onnx(self, onnx_path: Path, protocol: TimingProtocol) -> Measurement:
        raise OnnxNasError("the torch-cuda backend times PyTorch modules and cannot run an ONNX file",
                           where=str(onnx_path), fix="use --backend tensorrt, trtexec or onnxruntime")


def require_cuda(what: str) -> None:
    if not torch.cuda.is_available():
        raise OnnxNasError(f"{what} needs a CUDA device and torch sees none (torch {torch.__version__})",
                           fix="install a CUDA build of torch on a GPU machine, or use --device cpu")


def time_cuda(launch: Callable[[], object], protocol: TimingProtocol, stream: torch.cuda.Stream) -> Measurement:
    """Warm up, then bracket each launch on ``stream`` with CUDA events; GPU time only.

    Launches are queued back to back (as trtexec does), so host overhead hides behind
    the GPU and each sample is the kernels' time. Batches of ``runs`` continue until
    ``min_time_s`` of GPU time is measured, capped at ``runs * MAX_RUNS_FACTOR``.
    """
    runs = max(protocol.runs, 1)
    cap = runs * MAX_RUNS_FACTOR
    samples_us: list[float] = []
    measured_ms = 0.0
    with torch.cuda.stream(stream):
        for _ in range(protocol.warmup_runs):
            launch()
        stream.synchronize()
        while len(samples_us) < cap and (len(samples_us) < runs or measured_ms < protocol.min_time_s * 1e3):
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                      for _ in range(min(runs, cap - len(samples_us)))]
            for start, end in events:
                start.record(stream)
                launch()
                end.record(stream)
            stream.synchronize()
            times_ms = [start.elapsed_time(end) for start, end in events]
            measured_ms += sum(times_ms)
            samples_us.extend(t * 1000.0 for t in times_ms)
    return Measurement.from_samples(samples_us)
