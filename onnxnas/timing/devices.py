"""Device registry: which hardware a latency table is for, and which backends can time it.

A table is only meaningful for the GPU it was measured on, so asking for a device
the machine does not have is an error unless forced (and a forced table says so).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import torch

from onnxnas.errors import OnnxNasError, choice_error
from onnxnas.timing.base import TimingBackend
from onnxnas.timing.onnxruntime import OnnxRuntimeBackend
from onnxnas.timing.tensorrt import TensorRTBackend
from onnxnas.timing.torch_cuda import TorchCudaBackend
from onnxnas.timing.trtexec import TrtexecBackend

BACKENDS = ("onnxruntime", "tensorrt", "trtexec", "torch-cuda")
_GPU_BACKENDS = ("tensorrt", "trtexec", "torch-cuda", "onnxruntime")
_TEGRA_RELEASE = Path("/etc/nv_tegra_release")
_BOARD_MODEL = Path("/proc/device-tree/model")


@dataclasses.dataclass(frozen=True)
class DeviceSpec:
    """A named target. ``match`` holds whole words of the detected GPU (or Jetson board) name.

    Words, not substrings, so that ``A10`` does not claim an ``A100``.
    """

    name: str
    description: str
    match: tuple[str, ...]
    kind: str  # "cuda" | "cpu"
    default_backend: str
    backends: tuple[str, ...]

    def matches(self, hardware: dict[str, Any]) -> bool:
        if self.kind == "cpu":
            return True
        names = " ".join(str(hardware.get(key) or "") for key in ("gpu", "jetson"))
        return any(re.search(rf"(?<![A-Za-z0-9]){re.escape(word)}(?![A-Za-z0-9])", names) for word in self.match)


def _gpu(name: str, description: str, *match: str) -> DeviceSpec:
    return DeviceSpec(name, description, match, "cuda", "tensorrt", _GPU_BACKENDS)


DEVICES: dict[str, DeviceSpec] = {
    spec.name: spec
    for spec in (
        _gpu("v100", "NVIDIA V100, Volta sm_70", "V100"),
        _gpu("a100", "NVIDIA A100, Ampere sm_80", "A100"),
        _gpu("h100", "NVIDIA H100, Hopper sm_90", "H100"),
        _gpu("h200", "NVIDIA H200, Hopper sm_90", "H200"),
        _gpu("t4", "NVIDIA T4, Turing sm_75", "T4"),
        _gpu("l4", "NVIDIA L4, Ada sm_89", "L4"),
        _gpu("a10", "NVIDIA A10 / A10G, Ampere sm_86", "A10", "A10G"),
        _gpu("orin", "NVIDIA Jetson Orin, Ampere sm_87", "Orin"),
        DeviceSpec("cpu", "the host CPU, timed with ONNX Runtime", (), "cpu", "onnxruntime", ("onnxruntime",)),
    )
}


def detect_hardware() -> dict[str, Any]:
    """What this machine has, as recorded in a LUT header (GPU, SM count, driver, CUDA, CPU)."""
    info: dict[str, Any] = {"kind": "cpu", "cpu": _cpu_name(), "cpu_cores": os.cpu_count()}
    if _TEGRA_RELEASE.exists():
        info["jetson"] = _read_text(_BOARD_MODEL) or (_read_text(_TEGRA_RELEASE) or "Jetson").splitlines()[0]
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        info.update(
            kind="cuda",
            gpu=torch.cuda.get_device_name(index),
            sm_count=props.multi_processor_count,
            compute_capability=f"{props.major}.{props.minor}",
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            driver=_driver_version(index),
        )
    return info


def device_spec(name: str) -> DeviceSpec:
    """The registry entry for ``name`` (no hardware check); an unknown name lists the valid ones."""
    spec = DEVICES.get(name.lower())
    if spec is None:
        raise choice_error("device", name, tuple(DEVICES))
    return spec


def resolve_device(name: str, force: bool = False) -> tuple[DeviceSpec, dict[str, Any]]:
    """Look up ``name`` and check the machine has it; returns the spec and the detected hardware.

    The returned dict has ``requested`` and ``forced`` (true when the hardware did not
    match and ``force`` let it through).
    """
    spec = device_spec(name)
    hardware = detect_hardware()
    matched = spec.matches(hardware)
    if not matched and not force:
        raise OnnxNasError(
            f"device {spec.name!r} ({spec.description}) was asked for but this machine has {_describe(hardware)}",
            fix=f"pass --force-device to label the table {spec.name!r} anyway, or use --device cpu",
        )
    return spec, {"requested": spec.name, "forced": not matched, **hardware}


def get_backend(name: str, device: DeviceSpec, **options: Any) -> TimingBackend:
    """Construct backend ``name`` for ``device``; ``options`` go to its constructor.

    On a CUDA device, onnxruntime defaults to its CUDA provider: the table is for the GPU.
    """
    if name not in BACKENDS:
        raise choice_error("backend", name, BACKENDS)
    if name not in device.backends:
        raise OnnxNasError(f"backend {name!r} cannot time device {device.name!r}",
                           fix=f"use one of: {', '.join(device.backends)}")
    if name == "onnxruntime":
        options.setdefault("provider", "cuda" if device.kind == "cuda" else "cpu")
        return OnnxRuntimeBackend(**options)
    factories = {"tensorrt": TensorRTBackend, "trtexec": TrtexecBackend, "torch-cuda": TorchCudaBackend}
    return factories[name](**options)


def backend_for(device: str, backend: str | None, *, force: bool = False, threads: int = 1, precision: str = "fp32",
                timing_cache: Path | None = None) -> tuple[TimingBackend, dict[str, Any]]:
    """Backend ``backend`` (default: the device's) for a checked device, with the options each kind takes.

    Returns the backend and the device record a LUT header stores. build-lut, bench, finalize
    and lut validate (rebuilding a table's backend from its header) all go through here.
    """
    spec, hardware = resolve_device(device, force=force)
    name = backend or spec.default_backend
    options: dict[str, Any] = {}
    if name == "onnxruntime":
        options["threads"] = threads
    elif name in ("tensorrt", "trtexec"):
        options.update(timing_cache=timing_cache, precision=precision)
    return get_backend(name, spec, **options), {"name": spec.name, **hardware}


def _describe(hardware: dict[str, Any]) -> str:
    if hardware.get("kind") == "cuda":
        return f"GPU {hardware['gpu']}"
    board = f", Jetson board {hardware['jetson']}" if hardware.get("jetson") else ""
    return f"no CUDA GPU (CPU: {hardware['cpu']}, {hardware['cpu_cores']} cores{board})"


def _cpu_name() -> str:
    for line in _read_text(Path("/proc/cpuinfo")).splitlines():
        if line.lower().startswith(("model name", "hardware")) and ":" in line:
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def _driver_version(index: int) -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", f"--id={index}"],
                              capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").replace("\x00", "").strip()
    except OSError:
        return ""
