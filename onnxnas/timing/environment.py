"""What identifies a timing environment, and whether this host is the one a table was timed on.

A latency table is only as good as the machine and software that timed it: the shipped
`tiny` table, built with ONNX Runtime 1.31.1, predicts 77.6 us for a net that ONNX Runtime
1.32.0 runs in 30.0 us on a CPU of the same name. So the header records the CPU model and
the flags that select kernels, the backend's version, the thread count and the GPU stack,
and every command that predicts from a table compares that record with the host.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxnas.errors import OnnxNasError

if TYPE_CHECKING:
    from onnxnas.lut.table import LatencyTable
    from onnxnas.schema import Fields

# CPU features that change which kernels a backend picks (x86 and Arm names from /proc/cpuinfo).
TIMING_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
                "asimd", "asimddp", "asimdhp", "sve", "sve2", "i8mm", "bf16")
_BACKEND_PACKAGES = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu"), "tensorrt": ("tensorrt", "tensorrt-cu12"),
                     "trtexec": ("tensorrt", "tensorrt-cu12"), "torch-cuda": ("torch",)}
_GPU_FIELDS = ("gpu", "driver", "cuda")


@dataclasses.dataclass(frozen=True)
class TimingEnvironment:
    """The record a LUT header stores under ``environment`` (``None``: not recorded / not present)."""

    cpu: str | None
    cpu_flags: tuple[str, ...] | None
    cpu_cores: int | None
    backend: str
    backend_version: str | None
    threads: int
    gpu: str | None = None
    driver: str | None = None
    cuda: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["cpu_flags"] = list(self.cpu_flags) if self.cpu_flags is not None else None
        return data

    def describe(self) -> str:
        """``AMD EPYC [avx2 avx512f], onnxruntime 1.32.0, 1 thread(s)`` (+ GPU, driver, CUDA)."""
        flags = f" [{' '.join(self.cpu_flags) or 'no SIMD flags'}]" if self.cpu_flags is not None else ""
        gpu = f", GPU {self.gpu} (driver {self.driver}, CUDA {self.cuda})" if self.gpu else ""
        return (f"{self.cpu or 'unknown CPU'}{flags}{gpu}, {self.backend} {self.backend_version or '(version unknown)'}, "
                f"{self.threads} thread(s)")


def check_environment(f: "Fields", *, max_text: int, max_threads: int) -> None:
    """Validate a header's ``environment`` object (the table loader calls this)."""
    for name in ("cpu", "backend_version", *_GPU_FIELDS):
        value = f.get(name, None)
        if value is not None and (not isinstance(value, str) or len(value) > max_text):
            raise f.fail(name, f"expected a string or null, got {str(value)[:40]!r}")
    f.identifier("backend")
    flags = f.get("cpu_flags", None)
    if flags is not None and not (isinstance(flags, list) and len(flags) <= 256
                                  and all(isinstance(x, str) and len(x) <= 64 for x in flags)):
        raise f.fail("cpu_flags", "expected a list of flag names or null")
    if f.get("cpu_cores", None) is not None:
        f.integer("cpu_cores", high=2**20)
    f.integer("threads", high=max_threads)
    f.done()


def backend_software_version(backend: str) -> str | None:
    """The installed version of the package that times with ``backend`` (read from metadata, not imported)."""
    for package in _BACKEND_PACKAGES.get(backend, ()):
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, ...] | None:
    """The timing-relevant flags of the first CPU listed, sorted; None where the platform does not say."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() in ("flags", "features"):
            present = set(value.split())
            return tuple(sorted(flag for flag in TIMING_FLAGS if flag in present))
    return None


def host_environment(backend: str, threads: int) -> TimingEnvironment:
    """This machine, timing with ``backend`` on ``threads`` threads."""
    from onnxnas.timing.devices import detect_hardware  # imports torch; the table loader must not need it

    hardware = detect_hardware()
    return TimingEnvironment(cpu=hardware.get("cpu"), cpu_flags=cpu_flags(), cpu_cores=_usable_cores(),
                             backend=backend, backend_version=backend_software_version(backend), threads=threads,
                             **{name: _text(hardware.get(name)) for name in _GPU_FIELDS})


def recorded_environment(header: dict[str, Any]) -> TimingEnvironment:
    """The environment a (validated) header records.

    Tables built before the record existed still say their CPU name, backend version and
    threads; their CPU flags are unknown (``cpu_flags`` None), which is not a match.
    """
    record = header.get("environment")
    if record is not None:
        return environment_from(record)
    device, backend = header.get("device", {}), header.get("backend", {})
    version = str(backend.get("version", "")).split(" ")[0] or None
    return TimingEnvironment(cpu=device.get("cpu"), cpu_flags=None, cpu_cores=device.get("cpu_cores"),
                             backend=str(backend.get("name")), backend_version=version,
                             threads=int(header.get("protocol", {}).get("threads", 1)),
                             **{name: _text(device.get(name)) for name in _GPU_FIELDS})


def environment_from(record: dict[str, Any]) -> TimingEnvironment:
    """A validated ``environment`` record (the header's, or a ``host_checks`` entry's) as a value."""
    flags = record.get("cpu_flags")
    return TimingEnvironment(**{**record, "cpu_flags": tuple(flags) if flags is not None else None})


def checked_here(header: dict[str, Any], host: TimingEnvironment) -> bool:
    """``onnxnas lut check`` passed on a host like ``host`` (recorded under ``host_checks``)."""
    return any(not differences(environment_from(c["environment"]), host) for c in header.get("host_checks", []))


def differences(recorded: TimingEnvironment, host: TimingEnvironment) -> list[str]:
    """What about ``host`` differs from where the table was timed, one phrase each (empty: same place)."""
    found = []
    if recorded.gpu is None:  # a GPU table times the GPU: its host CPU does not matter
        if recorded.cpu is None:
            found.append("CPU not recorded")
        elif recorded.cpu != host.cpu:
            found.append(f"CPU {recorded.cpu!r} there, {host.cpu!r} here")
        if recorded.cpu_flags is None:
            found.append("CPU flags not recorded by this older table")
        elif host.cpu_flags is not None and recorded.cpu_flags != host.cpu_flags:
            lost = sorted(set(recorded.cpu_flags) - set(host.cpu_flags))
            gained = sorted(set(host.cpu_flags) - set(recorded.cpu_flags))
            found.append("CPU flags " + ", ".join(filter(None, [lost and f"{' '.join(lost)} missing here",
                                                              gained and f"{' '.join(gained)} only here"])))
    if recorded.backend_version != host.backend_version:
        found.append(f"{recorded.backend} {recorded.backend_version or '(unknown)'} there, "
                     f"{host.backend_version or 'not installed'} here")
    if host.cpu_cores is not None and recorded.threads > host.cpu_cores:
        found.append(f"{recorded.threads} threads there, {host.cpu_cores} usable cores here")
    for name in _GPU_FIELDS:
        if getattr(recorded, name) != getattr(host, name) and (getattr(recorded, name) or getattr(host, name)):
            found.append(f"{name} {getattr(recorded, name)!r} there, {getattr(host, name)!r} here")
    return found


def warn_if_foreign(table: "LatencyTable | str | os.PathLike[str] | None") -> None:
    """Print one warning line when ``table`` (or the table at that path) was timed elsewhere.

    Called by search, finalize, arch stats and bench before they trust a prediction. A path
    that does not exist, or None, is left to the caller (it reports missing tables itself).
    """
    from onnxnas.lut.table import LatencyTable

    if table is None:
        return
    if not isinstance(table, LatencyTable):
        if not Path(table).is_file():
            return
        try:
            table = LatencyTable.load(table)
        except OnnxNasError as exc:
            print(f"onnxnas: warning: cannot check where the table was timed: {exc}", file=sys.stderr)
            return
    message = foreign_message(table)
    if message:
        print(f"onnxnas: warning: {message}", file=sys.stderr)


def foreign_message(table: "LatencyTable", host: TimingEnvironment | None = None) -> str | None:
    """The warning text for ``table`` on ``host`` (default: this machine), or None when it is home."""
    recorded = recorded_environment(table.header)
    if recorded.backend not in _BACKEND_PACKAGES:  # a synthetic table (tests, formulas) was timed nowhere
        return None
    host = host or host_environment(recorded.backend, recorded.threads)
    found = differences(recorded, host)
    if not found or checked_here(table.header, host):
        return None
    return (f"{table.source}: built on {recorded.describe()}; this host differs ({'; '.join(found)}); "
            f"predictions may not hold -- fix: onnxnas lut check {table.source}, or rebuild with: "
            f"{table.rebuild_command()}")


def _usable_cores() -> int | None:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
