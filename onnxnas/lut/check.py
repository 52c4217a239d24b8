"""`lut check`: does a table still hold on this machine? Re-time a sample of its entries here.

A table is specific to the hardware and software that timed it. Rather than trust a
header comparison alone, re-time K measured entries with the table's own backend and
protocol (through the builder's code) and compare medians: within the tolerance the
table holds here; beyond it, the drifted keys and the command that rebuilds them.
"""

from __future__ import annotations

import dataclasses
import datetime
import random
import statistics
from pathlib import Path

from tqdm import tqdm

from onnxnas.errors import OnnxNasError
from onnxnas.lut.builder import measure_job, timing_job
from onnxnas.lut.key import KeyedBlock, space_units
from onnxnas.lut.table import MAX_HOST_CHECKS, LatencyTable
from onnxnas.space.spec import SearchSpace
from onnxnas.timing.base import TimingBackend
from onnxnas.timing.environment import TimingEnvironment, differences, environment_from

MAX_CHECK_SAMPLES = 1000


@dataclasses.dataclass(frozen=True)
class CheckedEntry:
    """One re-timed entry: the table's median, this machine's (or why it failed here)."""

    key: str
    table_us: float
    now_us: float | None
    error: str | None = None

    @property
    def ratio(self) -> float | None:
        return None if self.now_us is None else self.now_us / self.table_us


@dataclasses.dataclass(frozen=True)
class CheckReport:
    entries: list[CheckedEntry]
    tolerance: float

    def drifted(self) -> list[CheckedEntry]:
        return [e for e in self.entries if e.ratio is None or abs(e.ratio - 1.0) > self.tolerance]

    def median_ratio(self) -> float | None:
        ratios = [e.ratio for e in self.entries if e.ratio is not None]
        return statistics.median(ratios) if ratios else None


def sample_units(table: LatencyTable, space: SearchSpace, count: int, seed: int) -> list[KeyedBlock]:
    """``count`` measured (not interpolated, not failed) entries of ``table``, drawn reproducibly."""
    table.check_space(space)
    num_classes = table.header.get("identity", {}).get("num_classes")
    units = {u.key: u for u in space_units(space, table.precision, table.batch_size, num_classes)}
    measured = sorted(k for k, e in table.entries.items() if e.ok and not e.interpolated and k in units)
    if not measured:
        raise OnnxNasError("the table has no measured entry of its space to re-time", where=table.source,
                           fix=f"rebuild it with: {table.rebuild_command()}")
    return [units[k] for k in random.Random(seed).sample(measured, min(count, len(measured)))]


def check_table(table: LatencyTable, backend: TimingBackend, units: list[KeyedBlock],
                workdir: Path, tolerance: float, *, progress: bool = True) -> CheckReport:
    """Re-time ``units`` here with the table's protocol; compare with the table's medians."""
    protocol = table.protocol
    checked = []
    for unit in tqdm(units, desc="lut check", unit="key", disable=not progress):
        entry = measure_job(timing_job(unit, table.precision, workdir), backend, protocol)
        checked.append(CheckedEntry(unit.key, float(table.entries[unit.key].median_us),  # type: ignore[arg-type]
                                    entry.median_us, entry.error))
    return CheckReport(checked, tolerance)


def record_pass(table: LatencyTable, host: TimingEnvironment, report: CheckReport, tolerance: float) -> Path:
    """Vouch for ``host`` in the table's header (``host_checks``), so commands here stop warning.

    One record per host (a new pass replaces the old), the newest MAX_HOST_CHECKS kept; the
    entries are not touched. Written atomically.
    """
    others = [c for c in table.header.get("host_checks", []) if differences(environment_from(c["environment"]), host)]
    checked = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    record = {"environment": host.to_dict(), "checked": checked, "samples": len(report.entries),
              "tolerance": tolerance, "median_ratio": report.median_ratio()}
    table.header["host_checks"] = [*others, record][-MAX_HOST_CHECKS:]
    return table.save(table.source)
