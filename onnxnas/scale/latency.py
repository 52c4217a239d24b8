"""Latency budgets on widths the table lacks: a derived table in ``--out`` that times each
missing key with the input table's own backend and protocol, through the LUT builder and its
journal. The input table is never modified; a killed run resumes from the journal."""

from __future__ import annotations

import copy
from pathlib import Path

from onnxnas.arch import Arch
from onnxnas.cost import LatencyCost
from onnxnas.errors import OnnxNasError
from onnxnas.lut.builder import BuildConfig, measure_units, table_backend
from onnxnas.lut.journal import Journal
from onnxnas.lut.key import arch_units
from onnxnas.lut.table import LatencyTable
from onnxnas.space import SearchSpace

DERIVED_NAME = "lut.derived.json"


class TimedLatencyCost(LatencyCost):
    """:class:`LatencyCost` over a copy of ``table`` that times the keys an arch needs and it lacks."""

    def __init__(self, table: LatencyTable, out: Path, space: SearchSpace | None, space_name: str):
        if space is None:
            raise OnnxNasError(f"latency budgets time new widths in the arch's space, and {space_name!r} is not built in",
                               where="--lut", fix="pass its space file with --space, or use a params or macs budget")
        derived = LatencyTable(copy.deepcopy(table.header), dict(table.entries), str(out / DERIVED_NAME))
        derived.header["derived_from"] = table.source
        super().__init__(derived)
        backend, protocol = table_backend(derived), derived.protocol
        self.config = BuildConfig(space=space, device=derived.header.get("device", {"name": "cpu"}),
                                  backend=backend, protocol=protocol, precision=derived.precision, out=Path(derived.source))
        self.journal = Journal(self.config.journal_path, self.config.identity())
        derived.entries.update(self.journal.read())  # keys timed by an earlier, interrupted run
        self.timed = 0

    def exact(self, arch: Arch) -> float:
        self.check_arch(arch)  # a table of the wrong precision fails before anything is timed
        units = [u for u in arch_units(arch, self.table.precision, self.table.batch_size) if u.key not in self.table.entries]
        failed = []
        for entry in measure_units(self.config, list({u.key: u for u in units}.values()), self.journal):
            self.timed += 1
            if entry.ok:
                self.table.entries[entry.key] = entry
            else:
                failed.append(entry)
        if failed:  # the fallback: between two measured hidden widths, interpolate (flagged "interpolated")
            added = set(self.table.fill_widths(e.key for e in failed))
            self.table.entries.update({e.key: e for e in failed if e.key not in added})  # a lookup names the error
        return super().exact(arch)

    def save(self) -> Path:
        """Write the derived table (counts updated) atomically and drop the journal."""
        self.table.header["counts"] = self.table.summary_counts()
        self.table.header["timed_by_scale"] = {"keys": self.timed, "backend_version": self.config.backend.version()}
        path = self.table.save(self.table.source)
        self.journal.remove()
        return path
