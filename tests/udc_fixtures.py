"""Test inputs for the UDC tests: an int8 latency table with formula values (not a measurement)."""

from __future__ import annotations

from pathlib import Path

from onnxnas.lut.key import space_units
from onnxnas.lut.table import LatencyTable, LutEntry
from onnxnas.space.spec import SearchSpace
from search_fixtures import OVERHEAD_US, formula_latency


def int8_table(space: SearchSpace, num_classes: int = 10, precision: str = "int8") -> LatencyTable:
    header = {"format_version": 1, "precision": precision, "space": {"name": space.name, "hash": space.hash,
              "resolution": space.resolution}, "calibration": {"per_call_overhead_us": OVERHEAD_US},
              "device": {"name": "test"}, "backend": {"name": "formula"}}
    entries = {u.key: LutEntry(u.key, median_us=formula_latency(u.spec), count=1)
               for u in space_units(space, precision, 1, num_classes)}
    return LatencyTable(header, entries)


def write_int8_table(space: SearchSpace, path: Path, precision: str = "int8") -> Path:
    table = int8_table(space, precision=precision)
    table.source = str(path)
    table.save(path)
    return path
