"""LUT lookups in the form the supernet needs: per-block latencies net of the call overhead.

Every LUT entry was timed as a separate call and so contains the per-call overhead once.
A network is one call, so the supernet prices each block at ``median - overhead`` and adds
the overhead back once with the fixed parts (stem and head). For a concrete arch this
equals :meth:`LatencyTable.units_latency`.
"""

from __future__ import annotations

from onnxnas.blocks.spec import BlockSpec
from onnxnas.lut.key import KeyedBlock, keyed_block, keyed_head, space_units
from onnxnas.lut.table import LatencyTable
from onnxnas.space.spec import SearchSpace


class SpaceLatency:
    """Latency lookups for one space and head class count, checked against the LUT up front."""

    def __init__(self, table: LatencyTable, space: SearchSpace, num_classes: int):
        table.check_space(space)
        self.table, self.space, self.num_classes = table, space, num_classes
        self.precision, self.batch = table.precision, table.batch_size
        keys = [unit.key for unit in space_units(space, self.precision, self.batch, num_classes)]
        table.fill_widths(keys)
        table.require(keys)  # one error listing every missing key, before any training
        self.overhead = table.per_call_overhead_us

    def block(self, spec: BlockSpec, in_hw: int) -> float:
        """A block's latency inside a network (µs); a skip costs nothing."""
        if spec.type == "skip":
            return 0.0
        return self._net(keyed_block(spec, in_hw, self.precision, self.batch))

    def fixed(self) -> float:
        """Stem + head + the one per-call overhead of the network (µs)."""
        space = self.space
        hw = space.stem_out_hw
        for pos in space.positions():
            hw = (pos.in_hw + pos.stride - 1) // pos.stride
        stem = keyed_block(space.stem_block(), space.resolution, self.precision, self.batch)
        head = keyed_head(space.head_spec(self.num_classes), hw, self.precision, self.batch)
        return self.overhead + self._net(stem) + self._net(head)

    def _net(self, unit: KeyedBlock) -> float:
        return self.table.latency(unit.key) - self.overhead
