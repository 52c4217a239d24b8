"""Test inputs for the search tests: a latency table with known values, and CLI runners.

The synthetic table is a test input (values chosen by formula so tests can compute the
expected latencies by hand), not a measurement.
"""

from __future__ import annotations

from pathlib import Path

from onnxnas.blocks.spec import BlockSpec
from onnxnas.lut.key import space_units
from onnxnas.lut.table import LatencyTable, LutEntry
from onnxnas.space.spec import SearchSpace

OVERHEAD_US = 3.0
SMALL = ["--space", "tiny", "--data", "synthetic", "--epochs", "4", "--warmup-epochs", "1",
         "--max-batches", "3", "--batch-size", "16"]  # a PruNet search of seconds


def run_search(lut: Path, out: Path, *extra: str) -> int:
    """``onnxnas search`` on tiny with :data:`SMALL` settings; the exit status."""
    from onnxnas.cli import main

    return main(["search", "--lut", str(lut), "--out", str(out), *SMALL, *extra])


def formula_latency(spec: BlockSpec | object) -> float:
    """Latency grows with hidden width, kernel and SE, so the search has something to trade."""
    if isinstance(spec, BlockSpec):
        width = spec.hidden_chs or spec.out_chs
        return OVERHEAD_US + 10.0 + 0.5 * width + 2.0 * spec.kernel_size + 5.0 * spec.se
    return OVERHEAD_US + 20.0


def synthetic_table(space: SearchSpace, num_classes: int = 10) -> LatencyTable:
    header = {"format_version": 1, "precision": "fp32", "space": {"name": space.name, "hash": space.hash,
              "resolution": space.resolution}, "calibration": {"per_call_overhead_us": OVERHEAD_US},
              "device": {"name": "test"}, "backend": {"name": "formula"}}
    entries = {u.key: LutEntry(u.key, median_us=formula_latency(u.spec), count=1)
               for u in space_units(space, "fp32", 1, num_classes)}
    return LatencyTable(header, entries)


def write_synthetic_table(space: SearchSpace, path: Path) -> Path:
    table = synthetic_table(space)
    table.source = str(path)
    table.save(path)
    return path
