"""The LUT file: a provenance header, then one entry per key (a measurement or a failure).

A failure is stored with its error text and is never a latency of 0. Looking up a key
that is missing or failed raises a user error that lists the keys and the command that
fills them.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from onnxnas.errors import OnnxNasError
from onnxnas.fileio import atomic_write_json, read_json
from onnxnas.lut.key import KeyedBlock, arch_units, width_group

FORMAT_VERSION = 1


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

    @classmethod
    def from_dict(cls, key: str, data: dict[str, Any]) -> "LutEntry":
        entry = cls(key=key, **data)
        if entry.error is None and (entry.median_us is None or entry.median_us <= 0):
            raise ValueError(f"entry {key!r} has neither a positive median_us nor an error")
        return entry


class LatencyTable:
    """Header + entries, with lookups for blocks and whole archs."""

    def __init__(self, header: dict[str, Any], entries: dict[str, LutEntry], source: str = "<memory>"):
        self.header = header
        self.entries = entries
        self.source = source

    # ---- files -------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> "LatencyTable":
        data = read_json(path, "latency table")
        source = str(path)
        if not isinstance(data, dict) or "header" not in data or "entries" not in data:
            raise OnnxNasError("not a latency table (needs 'header' and 'entries')", where=source,
                               fix="pass a file written by 'onnxnas build-lut'")
        if data["header"].get("format_version") != FORMAT_VERSION:
            raise OnnxNasError(f"unsupported format_version {data['header'].get('format_version')!r}", where=source,
                               fix=f"rebuild the table with this onnxnas (format {FORMAT_VERSION})")
        entries = {}
        for key, value in data["entries"].items():
            try:
                entries[key] = LutEntry.from_dict(key, value)
            except (TypeError, ValueError) as exc:
                raise OnnxNasError(f"entries[{key!r}]: {exc}", where=source, fix="rebuild or repair that entry") from exc
        return cls(data["header"], entries, source)

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
                               fix=f"fill them with: {self.fill_command()}")

    def fill_command(self) -> str:
        h = self.header
        return (f"onnxnas build-lut --device {h.get('device', {}).get('name', 'DEVICE')} --space {h.get('space', {}).get('name', 'SPACE')} "
                f"--backend {h.get('backend', {}).get('name', 'BACKEND')} --precision {h.get('precision', 'fp32')} --out {self.source}")

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

