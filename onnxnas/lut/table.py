"""The LUT file: a provenance header, then one entry per key (a measurement or a failure).

A failure is stored with its error text and is never a latency of 0. Looking up a key
that is missing or failed raises a user error that lists the keys and the command that
fills them. :meth:`LatencyTable.load` is the one validating loader: every field any
command reads is checked here (types, finite ranges, bounded sizes), and a bad one is an
:class:`OnnxNasError` naming the file and its JSON path (``$.entries["k"].median_us``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from onnxnas.errors import OnnxNasError
from onnxnas.fileio import atomic_write_json, read_json
from onnxnas.lut.key import KeyedBlock, arch_units, width_group
from onnxnas.schema import MAX_CLASSES, MAX_LIST, MAX_RESOLUTION, Fields
from onnxnas.space.load import BUILTIN_SPACES
from onnxnas.timing.base import MAX_RUNS, PRECISIONS, TimingProtocol
from onnxnas.timing.environment import check_environment

FORMAT_VERSION = 1
MAX_KEY_CHARS = 512
MAX_TEXT_CHARS = 4096  # error texts, versions, names: one line each, not a payload
MAX_LATENCY_US = 1e9  # 1000 s for one block is a corrupt file, not a measurement
MAX_THREADS = 1024
MAX_BATCH = 1024
MAX_MIN_TIME_S = 60.0
MAX_SHARDS = 100_000
MAX_INTERPOLATE_EVERY = 1024
MAX_HOST_CHECKS = 16  # the hosts a passed `lut check` vouches for; the oldest goes first
_SHARD = re.compile(r"(\d{1,6})/(\d{1,6})")
_HASH = re.compile(r"[0-9a-f]{1,64}")
_DEFAULT_PROTOCOL = TimingProtocol()


@dataclasses.dataclass(frozen=True)
class LutEntry:
    """One key's result: latency statistics in microseconds, or the error that prevented them."""

    key: str
    median_us: float | None = None
    p10_us: float | None = None
    p90_us: float | None = None
    count: int = 0
    error: str | None = None
    interpolated: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and self.median_us is not None

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in dataclasses.asdict(self).items() if v is not None and k != "key"}
        if not self.interpolated:
            data.pop("interpolated")
        return data


def parse_entry(key: object, data: object, path: str, source: str) -> LutEntry:
    """One entry (a table's, or a journal line's), validated: a finite positive median with
    p10 <= median <= p90, or an error text; never both, never neither."""
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_CHARS:
        raise OnnxNasError(f"{path}: a key must be a non-empty string of at most {MAX_KEY_CHARS} characters, "
                           f"got {str(key)[:40]!r}", where=source, fix="rebuild the table, or delete that entry")
    f = Fields(data, path, source)
    count = f.integer("count", 0, low=0, high=2**31)
    interpolated = f.boolean("interpolated", False)
    if f.has("error") and f.has("median_us"):
        raise f.fail("median_us", "an entry holds a median_us or an error, not both", fix="rebuild or delete that entry")
    if f.has("error") or not f.has("median_us"):
        error = _text(f, "error", required=True)
        f.done()
        return LutEntry(key, count=count, error=error)
    latency = dict(low=0.0, high=MAX_LATENCY_US, low_open=True)
    median = f.number("median_us", **latency)
    p10, p90 = f.number("p10_us", None, **latency), f.number("p90_us", None, **latency)
    if p10 is not None and p10 > median:
        raise f.fail("p10_us", f"{p10:g} exceeds median_us {median:g}", fix="rebuild or delete that entry")
    if p90 is not None and p90 < median:
        raise f.fail("p90_us", f"{p90:g} is below median_us {median:g}", fix="rebuild or delete that entry")
    f.done()
    return LutEntry(key, median, p10, p90, count, interpolated=interpolated)


def check_header(data: object, source: str) -> dict[str, Any]:
    """Validate every header field a command reads; returns the header unchanged.

    Required: format_version, device.name, backend.name, precision. The rest is optional
    (synthetic test tables and older builds lack some) but checked wherever present.
    Unknown top-level fields are kept: newer builds of this format may add some.
    """
    h = Fields(data, "$.header", source)
    version = h.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise OnnxNasError(f"$.header.format_version: unsupported version {version!r}", where=source,
                           fix=f"rebuild the table with this onnxnas (format {FORMAT_VERSION})")
    device = h.object("device")
    device.identifier("name")
    device.boolean("forced", False)
    for name in ("cpu", "gpu", "driver", "cuda", "jetson"):
        _text(device, name)
    device.integer("cpu_cores", None, low=1, high=2**20)
    backend = h.object("backend")
    backend.identifier("name")
    _text(backend, "version")
    h.string("precision", choices=PRECISIONS)
    if h.has("protocol"):
        _check_protocol(h.object("protocol"))
    if h.has("space"):
        space = h.object("space")
        space.identifier("name")
        if not _HASH.fullmatch(str(space.string("hash"))):
            raise space.fail("hash", "expected a hex digest", fix="rebuild the table")
        space.integer("resolution", low=1, high=MAX_RESOLUTION)
    shard = h.string("shard", "0/1")
    match = _SHARD.fullmatch(shard)
    if shard != "all" and not (match and 0 <= int(match[1]) < int(match[2]) <= MAX_SHARDS):
        raise h.fail("shard", f"expected 'i/N' with 0 <= i < N, or 'all', got {shard[:40]!r}")
    if h.has("identity"):
        identity = h.object("identity")
        identity.integer("interpolate_every", 1, high=MAX_INTERPOLATE_EVERY)
        if identity.get("num_classes", None) is not None:
            identity.integer("num_classes", high=MAX_CLASSES)
    if h.has("calibration"):
        calibration = h.object("calibration")
        for name in ("per_call_overhead_us", "measured_overhead_us"):
            calibration.number(name, None, low=0.0, high=MAX_LATENCY_US)
    for name in ("pending_keys", "merged_from"):
        if not all(isinstance(k, str) and len(k) <= MAX_TEXT_CHARS for k in h.list(name, [])):
            raise h.fail(name, "expected a list of strings")
    if h.has("validation"):
        _check_validation(h.object("validation"))
    if h.has("environment"):
        check_environment(h.object("environment"), max_text=MAX_TEXT_CHARS, max_threads=MAX_THREADS)
    for i, record in enumerate(h.list("host_checks", [], max_items=MAX_HOST_CHECKS)):
        _check_host_check(Fields(record, h.at(f"host_checks[{i}]"), h.source))
    for name in ("host", "created", "onnxnas_version"):
        _text(h, name)
    return h.data


def _check_host_check(c: Fields) -> None:
    """One passed ``onnxnas lut check``: where it ran, when, and what it measured."""
    check_environment(c.object("environment"), max_text=MAX_TEXT_CHARS, max_threads=MAX_THREADS)
    _text(c, "checked", required=True)
    c.integer("samples", high=MAX_LIST)
    c.number("tolerance", low=0.0, high=10.0, low_open=True)
    c.number("median_ratio", low=0.0, high=1e6, low_open=True)
    c.done()


def _check_protocol(p: Fields) -> None:
    p.integer("warmup_runs", _DEFAULT_PROTOCOL.warmup_runs, low=0, high=MAX_RUNS)
    p.integer("runs", _DEFAULT_PROTOCOL.runs, high=MAX_RUNS)
    p.number("min_time_s", _DEFAULT_PROTOCOL.min_time_s, low=0.0, high=MAX_MIN_TIME_S)
    p.string("statistic", "median", choices=("median",))
    p.integer("batch_size", 1, high=MAX_BATCH)
    p.integer("threads", 1, high=MAX_THREADS)
    p.boolean("pin_cpus", True)
    p.boolean("canary_gate", True)
    p.done()


def _check_validation(v: Fields) -> None:
    v.integer("samples", high=MAX_LIST)
    for name in ("mape_pct", "max_error_pct"):
        v.number(name, low=0.0)
    if v.get("kendall_tau", None) is not None:  # None: undefined (all predictions tied)
        v.number("kendall_tau", low=-1.0, high=1.0)
    v.number("fitted_overhead_us", low=-MAX_LATENCY_US, high=MAX_LATENCY_US)
    v.number("mean_bias_pct", None)
    _text(v, "date", required=True)
    v.list("points", [])


def _text(f: Fields, name: str, *, required: bool = False) -> str | None:
    """An optional (null allowed) or required one-line string of bounded length."""
    value = f.get(name, ... if required else None)
    if value is None and not required:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT_CHARS:
        raise f.fail(name, f"expected a string of at most {MAX_TEXT_CHARS} characters, got {str(value)[:40]!r}")
    return value


def parse_table(data: object, source: str) -> tuple[dict[str, Any], dict[str, LutEntry]]:
    """A parsed LUT document -> (validated header, entries)."""
    top = Fields(data, "$", source)
    header = check_header(top.get("header"), source)
    raw = top.get("entries")
    if not isinstance(raw, dict) or len(raw) > MAX_LIST:
        raise top.fail("entries", f"expected an object of at most {MAX_LIST} key -> entry pairs, got "
                                  f"{type(raw).__name__}", fix="pass a file written by 'onnxnas build-lut'")
    top.done()
    return header, {key: parse_entry(key, value, f"$.entries[{json.dumps(key)}]", source) for key, value in raw.items()}


class LatencyTable:
    """Header + entries, with lookups for blocks and whole archs."""

    def __init__(self, header: dict[str, Any], entries: dict[str, LutEntry], source: str = "<memory>"):
        self.header = header
        self.entries = entries
        self.source = source

    # ---- files -------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> "LatencyTable":
        header, entries = parse_table(read_json(path, "latency table"), str(path))
        return cls(header, entries, str(path))

    def save(self, path: str | Path) -> Path:
        body = {"header": self.header, "entries": {k: self.entries[k].to_dict() for k in sorted(self.entries)}}
        return atomic_write_json(path, body)

    # ---- lookups -----------------------------------------------------------------------
    @property
    def per_call_overhead_us(self) -> float:
        """Fixed cost of one inference call, measured on an identity model at build time."""
        return float(self.header.get("calibration", {}).get("per_call_overhead_us", 0.0))

    def missing(self, keys: Iterable[str]) -> list[str]:
        """Keys that have no usable (measured or interpolated) entry."""
        return [k for k in dict.fromkeys(keys) if k not in self.entries or not self.entries[k].ok]

    def require(self, keys: Iterable[str]) -> None:
        missing = self.missing(keys)
        if missing:
            failed = [k for k in missing if k in self.entries]
            shown = ", ".join(missing[:5]) + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "")
            detail = f"; {len(failed)} of them failed to time: {self.entries[failed[0]].error}" if failed else ""
            raise OnnxNasError(f"latency table lacks {len(missing)} key(s): {shown}{detail}", where=self.source,
                               fix=f"fill them with: {self.build_command(self.source)}")

    def build_command(self, out: str) -> str:
        """The build-lut command with this table's settings (defaults left out), writing ``out``.

        With ``out`` the table itself it fills missing keys (finished ones are kept); with a
        new path it times the whole table again on this machine.
        """
        h, p = self.header, self.protocol
        identity = h.get("identity", {})
        space = h.get("space", {}).get("name", "SPACE")
        parts = ["onnxnas build-lut", f"--device {h['device']['name']}", "--force-device" if h["device"].get("forced") else "",
                 f"--space {space if space in BUILTIN_SPACES else 'SPACE_FILE'}", f"--backend {h['backend']['name']}",
                 f"--precision {self.precision}"]
        for flag, value, default in (("--threads", p.threads, _DEFAULT_PROTOCOL.threads),
                                     ("--warmup", p.warmup_runs, _DEFAULT_PROTOCOL.warmup_runs),
                                     ("--runs", p.runs, _DEFAULT_PROTOCOL.runs),
                                     ("--interpolate-every", identity.get("interpolate_every", 1), 1),
                                     ("--num-classes", identity.get("num_classes"), None)):
            parts.append(f"{flag} {value}" if value != default else "")
        shard = h.get("shard", "0/1")
        parts += [f"--shard {shard}" if shard not in ("0/1", "all") else "", f"--out {out}"]
        return " ".join(part for part in parts if part)

    def rebuild_command(self) -> str:
        """build-lut into a fresh file beside this one: every key timed again, here."""
        path = Path(self.source)
        return self.build_command(str(path.with_name(f"{path.stem}.rebuilt{path.suffix or '.json'}")))

    def latency(self, key: str) -> float:
        self.require([key])
        return float(self.entries[key].median_us)  # type: ignore[arg-type]

    def units_latency(self, units: Sequence[KeyedBlock]) -> float:
        """Predicted end-to-end latency of a chain of units: block medians, with the per-call
        overhead that each separate measurement contains counted only once."""
        self.require(u.key for u in units)
        total = sum(self.entries[u.key].median_us for u in units)  # type: ignore[misc]
        return total - (len(units) - 1) * self.per_call_overhead_us

    def arch_latency(self, arch: "Arch") -> float:  # noqa: F821
        return self.units_latency(arch_units(arch, self.precision, self.batch_size))

    @property
    def precision(self) -> str:
        return str(self.header.get("precision", "fp32"))

    @property
    def batch_size(self) -> int:
        return int(self.header.get("protocol", {}).get("batch_size", 1))

    @property
    def protocol(self) -> TimingProtocol:
        """The protocol the table was timed with (fields it lacks take today's defaults)."""
        return TimingProtocol(**self.header.get("protocol", {}))
    def check_space(self, space: "SearchSpace") -> None:  # noqa: F821
        """A table from another space or input size is an error, not a silent mismatch."""
        recorded = self.header.get("space", {})
        if recorded.get("hash") not in (None, space.hash) or recorded.get("resolution", space.resolution) != space.resolution:
            raise OnnxNasError(
                f"table was built for space {recorded.get('name')!r} (hash {recorded.get('hash')}, resolution "
                f"{recorded.get('resolution')}), not {space.name!r} (hash {space.hash}, resolution {space.resolution})",
                where=self.source, fix=f"build one with: onnxnas build-lut --space {space.name} --device ...")

    # ---- interpolation -----------------------------------------------------------------
    def fill_widths(self, wanted: Iterable[str]) -> list[str]:
        """Add linearly interpolated entries for wanted keys that differ from measured ones
        only in hidden width and lie between two measured widths. Returns the keys added."""
        measured: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for entry in self.entries.values():
            group = width_group(entry.key)
            if group and entry.ok and not entry.interpolated:
                measured[group[0]].append((group[1], float(entry.median_us)))  # type: ignore[arg-type]
        added = []
        for key in wanted:
            group = width_group(key)
            if key in self.entries or group is None:
                continue
            points = sorted(measured.get(group[0], []))
            below = [p for p in points if p[0] < group[1]]
            above = [p for p in points if p[0] > group[1]]
            if not below or not above:
                continue
            (w0, t0), (w1, t1) = below[-1], above[0]
            value = t0 + (t1 - t0) * (group[1] - w0) / (w1 - w0)
            self.entries[key] = LutEntry(key, median_us=value, p10_us=value, p90_us=value, count=0, interpolated=True)
            added.append(key)
        return added

    def summary_counts(self) -> dict[str, int]:
        values = list(self.entries.values())
        return {"entries": len(values), "measured": sum(e.ok and not e.interpolated for e in values),
                "interpolated": sum(e.interpolated for e in values), "failed": sum(not e.ok for e in values)}

