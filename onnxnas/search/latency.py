"""PruNet's latency term on the Cost protocol: a space's LUT prices in the form the supernet needs.

Every LUT entry was timed as a separate call and so contains the per-call overhead once.
A network is one call, so each block is priced at ``median - overhead`` and the overhead is
added back once with the fixed parts (stem and head): :class:`onnxnas.cost.LatencyCost`'s
``block_us`` and ``fixed_us``. The supernet's ``sum_l sum_i a_li LAT(B_li)`` is
``LatencyCost.expected`` of the same Gumbel weights (tests assert exact equality), and for
a concrete arch it equals :meth:`LatencyTable.arch_latency`.
"""

from __future__ import annotations

from onnxnas.blocks.spec import BlockSpec
from onnxnas.cost import LatencyCost
from onnxnas.lut.key import space_units
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
        self.cost = LatencyCost(table, precision=table.precision)  # the search runs at the table's precision
        self.overhead = self.cost.overhead

    def block(self, spec: BlockSpec, in_hw: int) -> float:
        """A block's latency inside a network (µs); a skip costs nothing."""
        return self.cost.block_us(spec, in_hw)

    def fixed(self) -> float:
        """Stem + head + the one per-call overhead of the network (µs)."""
        space = self.space
        hw = space.stem_out_hw
        for pos in space.positions():
            hw = (pos.in_hw + pos.stride - 1) // pos.stride
        return self.cost.fixed_us(space.stem_block(), space.resolution, space.head_spec(self.num_classes), hw)
