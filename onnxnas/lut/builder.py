"""`build-lut`: enumerate unique keys, time the unfinished ones, journal each, compact.

Resumable (journal), shardable (``--shard i/N`` splits keys by a stable hash) and
honest: a candidate that fails to time is recorded with its error, never as 0.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import platform
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from onnxnas import __version__
from onnxnas.blocks.builder import Head, build_block
from onnxnas.blocks.spec import BlockSpec
from onnxnas.errors import OnnxNasError
from onnxnas.fileio import atomic_write_bytes
from onnxnas.lock import exclusive_output
from onnxnas.lut.journal import Journal
from onnxnas.lut.key import KeyedBlock, space_units, width_group
from onnxnas.lut.table import FORMAT_VERSION, MAX_SHARDS, LatencyTable, LutEntry
from onnxnas.schema import is_identifier
from onnxnas.space.spec import SearchSpace
from onnxnas.timing.base import TimingBackend, TimingJob, TimingProtocol
from onnxnas.timing.devices import backend_for
from onnxnas.timing.environment import host_environment
from onnxnas.timing.onnx_file import identity_model, int8_flavor


@dataclasses.dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> "Shard":
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError as exc:
            raise OnnxNasError(f"--shard {text!r} is not of the form i/N", fix="e.g. --shard 0/4 (indices from 0)") from exc
        if not 1 <= count <= MAX_SHARDS or not 0 <= index < count:
            raise OnnxNasError(f"--shard {text!r}: need 0 <= i < N <= {MAX_SHARDS}", fix="e.g. --shard 0/4 ... --shard 3/4")
        return cls(index, count)

    def owns(self, key: str) -> bool:
        """Stable across machines and Python runs (unlike hash())."""
        return int(hashlib.sha1(key.encode()).hexdigest(), 16) % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclasses.dataclass
class BuildConfig:
    space: SearchSpace
    device: dict[str, Any]  # name, requested, detected, forced
    backend: TimingBackend
    protocol: TimingProtocol
    precision: str
    out: Path
    shard: Shard = Shard()
    num_classes: int | None = None
    interpolate_every: int = 1
    retry_failed: bool = False

    def __post_init__(self) -> None:
        if not is_identifier(self.space.name):  # it names the ONNX cache folder
            raise OnnxNasError(f"space name {self.space.name[:40]!r} is not a plain name", where="--space",
                               fix="name the space with letters, digits, '_', '-' or '.'")

    def identity(self) -> dict[str, Any]:
        """What must match for a journal or an existing table to be resumed."""
        return {"device": self.device["name"], "backend": self.backend.name, "precision": self.precision,
                "space_hash": self.space.hash, "protocol": self.protocol.to_dict(), "shard": str(self.shard),
                "num_classes": self.num_classes, "interpolate_every": self.interpolate_every}

    def header(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "device": self.device,
            "backend": {"name": self.backend.name, "version": self.backend.version()},
            "precision": self.precision,
            "protocol": self.protocol.to_dict(),
            "space": {"name": self.space.name, "hash": self.space.hash, "resolution": self.space.resolution},
            "environment": host_environment(self.backend.name, self.protocol.threads).to_dict(),
            "shard": str(self.shard),
            "identity": self.identity(),
            "host": platform.node(),
            "onnxnas_version": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }

    @property
    def overhead_key(self) -> str:
        """Key of the Identity probe at the network input, which measures one call's fixed cost."""
        return overhead_key(self.overhead_shape, self.precision)

    @property
    def overhead_shape(self) -> tuple[int, int, int, int]:
        return (self.protocol.batch_size, self.space.in_chs, self.space.resolution, self.space.resolution)

    @property
    def journal_path(self) -> Path:
        return self.out.with_name(self.out.name + ".journal.jsonl")

    @property
    def cache_dir(self) -> Path:
        """Exported blocks are cached per space, precision and (int8) Q/DQ flavor of the backend."""
        flavor = f"-{int8_flavor(self.backend.name)}" if self.precision == "int8" else ""
        return self.out.parent / ".onnx-cache" / f"{self.space.name}-{self.space.hash}-{self.precision}{flavor}"


def overhead_key(input_shape: Sequence[int], precision: str) -> str:
    return f"overhead:{'x'.join(map(str, input_shape))}:{precision}"


def units_to_measure(units: Sequence[KeyedBlock], every: int) -> list[KeyedBlock]:
    """With ``every`` > 1, time every ``every``-th hidden width of each group plus both ends;
    the widths between are interpolated at compaction and flagged in the table."""
    if every <= 1:
        return list(units)
    groups: dict[str, list[tuple[int, KeyedBlock]]] = defaultdict(list)
    chosen = []
    for unit in units:
        group = width_group(unit.key)
        if group is None:
            chosen.append(unit)
        else:
            groups[group[0]].append((group[1], unit))
    for members in groups.values():
        members.sort(key=lambda m: m[0])
        last = len(members) - 1
        chosen += [unit for i, (_, unit) in enumerate(members) if i % every == 0 or i == last]
    return chosen


def timing_job(unit: KeyedBlock, precision: str, cache_dir: Path) -> TimingJob:
    """The job that times ``unit``; its ONNX file is named by the key's hash, never by the key."""
    spec = unit.spec
    build = (lambda: build_block(spec)) if isinstance(spec, BlockSpec) else (lambda: Head(spec))
    name = hashlib.sha1(unit.key.encode()).hexdigest()[:20]
    return TimingJob(unit.key, build, unit.input_shape, precision, cache_dir / f"{name}.onnx")


def measure_job(job: TimingJob, backend: TimingBackend, protocol: TimingProtocol) -> LutEntry:
    """Time one job; the overhead job is a ready ONNX file, every other job a block to export.

    A failure of the block (export, session, run) is returned as an entry with its text,
    never as 0. A failure of the machine (a full disk, an unwritable folder, no memory) is
    no property of the block: it raises, so the build stops without recording the key.
    """
    try:
        if job.key.startswith("overhead:"):
            m = backend.measure_onnx(job.onnx_path, protocol)
        else:
            m = backend.measure(job, protocol)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        environment = _environment_cause(exc)
        if environment is not None:
            detail = getattr(environment, "strerror", None) or str(environment) or type(environment).__name__
            raise OnnxNasError(f"stopped while timing {job.key}: {type(environment).__name__}: {detail}",
                               where=str(getattr(environment, "filename", None) or job.onnx_path),
                               fix="free disk space or memory (or fix the folder), then rerun the same command; "
                                   "finished keys are kept and this one was not recorded") from exc
        return LutEntry(job.key, error=f"{type(exc).__name__}: {exc}".strip()[:500])
    return LutEntry(job.key, median_us=m.median_us, p10_us=m.p10_us, p90_us=m.p90_us, count=m.count)


def _environment_cause(exc: BaseException) -> BaseException | None:
    """The OSError or MemoryError that ``exc`` is, or was raised from (explicit causes only)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, (OSError, MemoryError)):
            return current
        seen.add(id(current))
        current = current.__cause__
    return None


def _overhead_job(config: BuildConfig) -> TimingJob:
    shape = config.overhead_shape
    path = config.cache_dir / f"overhead-{'x'.join(map(str, shape))}.onnx"
    if not path.exists():
        atomic_write_bytes(path, identity_model(shape, config.precision))
    return TimingJob(config.overhead_key, lambda: None, shape, config.precision, path)  # type: ignore[arg-type,return-value]


def _done_in_existing_table(config: BuildConfig) -> dict[str, LutEntry]:
    """A finished table at --out counts as done work (rerunning a finished build is a no-op)."""
    if not config.out.exists():
        return {}
    table = LatencyTable.load(config.out)
    if table.header.get("identity") != config.identity():
        raise OnnxNasError("a table built with other settings already exists here", where=str(config.out),
                           fix="pass another --out, or delete the file to rebuild")
    return {k: e for k, e in table.entries.items() if not e.interpolated}


def build_lut(config: BuildConfig, *, progress: bool = True) -> LatencyTable:
    """Time every unit of the space this shard owns that is not finished yet; write the table.

    One build per ``--out`` at a time: a second one fails at once instead of interleaving lines.
    """
    with exclusive_output(config.out.with_name(f".{config.out.name}.lock"), "latency table"):
        return _build_locked(config, progress)


def _build_locked(config: BuildConfig, progress: bool) -> LatencyTable:
    all_units = [u for u in space_units(config.space, config.precision, config.protocol.batch_size, config.num_classes)
                 if config.shard.owns(u.key)]
    finished = _done_in_existing_table(config)  # a bad table at --out is refused before anything is written
    jobs = [_overhead_job(config)] + [timing_job(u, config.precision, config.cache_dir)
                                      for u in units_to_measure(all_units, config.interpolate_every)]
    with Journal(config.journal_path, config.identity(), {job.key for job in jobs}) as journal:
        done = {**finished, **journal.read()}
        if config.retry_failed:
            done = {k: e for k, e in done.items() if e.ok}
        todo = [job for job in jobs if job.key not in done]
        if not todo and config.out.exists():  # finished before: keep the table (and its validation) as it is
            journal.remove()
            return LatencyTable.load(config.out)
        bar = tqdm(todo, desc=f"build-lut {config.space.name} ({len(jobs) - len(todo)}/{len(jobs)} done)",
                   unit="key", disable=not progress, dynamic_ncols=True)
        for job in bar:
            bar.set_postfix_str(job.key[:48])
            entry = measure_job(job, config.backend, config.protocol)
            journal.append(entry)
            done[job.key] = entry
        table = compact(config, done, [u.key for u in all_units])
        journal.remove()
    return table


def compact(config: BuildConfig, done: dict[str, LutEntry], unit_keys: Sequence[str]) -> LatencyTable:
    """Write the table atomically: header, measured entries, interpolated widths, counts."""
    header = config.header()
    overhead = done.get(config.overhead_key)
    header["calibration"] = {"overhead_key": config.overhead_key,
                             "per_call_overhead_us": overhead.median_us if overhead and overhead.ok else 0.0}
    table = LatencyTable(header, dict(done), str(config.out))
    table.fill_widths(unit_keys)
    header["pending_keys"] = [k for k in unit_keys if k not in table.entries]  # lacked neighbours to interpolate
    header["counts"] = table.summary_counts()
    table.save(config.out)
    return table


def measure_units(config: BuildConfig, units: Sequence[KeyedBlock], journal: Journal) -> list[LutEntry]:
    """Time ``units`` one by one, each journaled as it finishes: for tables derived from a built one
    (``onnxnas scale`` times the widths its solve visits with the table's own backend and protocol)."""
    entries = []
    for unit in units:
        entry = measure_job(timing_job(unit, config.precision, config.cache_dir), config.backend, config.protocol)
        journal.append(entry)
        entries.append(entry)
    return entries


def table_backend(table: LatencyTable) -> TimingBackend:
    """The backend a table was built with, so validation and checks measure like the build did."""
    device = table.header["device"]
    backend, _ = backend_for(device["name"], table.header["backend"]["name"], force=bool(device.get("forced")),
                             threads=table.protocol.threads, precision=table.precision,
                             timing_cache=Path(table.source).with_suffix(".timing.cache"))
    return backend
