"""One Cost protocol for every budget (docs/design.md §13): LUT latency, params, MACs, BOPs, size.

A cost gives (a) :meth:`Cost.exact`, the value of a concrete :class:`~onnxnas.arch.Arch`, and
(b) :meth:`Cost.expected`, a differentiable value of relaxed decisions: a :class:`RelaxedArch`
whose layers are :class:`Mixture` trees of option probabilities (torch tensors) over concrete
blocks (:class:`Placed`). The expected value is the probability-weighted sum of the leaves'
costs, evaluated in tree order, which is exactly PruNet's ``LAT = sum_l sum_i a_li LAT(B_li)``
(a Prunode is a two-leaf mixture inside a layer's mixture).

Blocks are counted analytically per :class:`~onnxnas.blocks.spec.BlockSpec` with a cache, so
a budget solve can price hundreds of archs in milliseconds; the counts equal
:func:`onnxnas.stats.count_stats` of ``build_model(arch)`` (tested).

Budgets are strings (``params=30000``, ``latency-us=800``, ``size=1.0MiB``): :func:`parse_budget`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, Protocol, Union

import torch

from onnxnas.arch import Arch
from onnxnas.blocks.spec import BlockSpec, ConvShape, FilterGroup, HeadSpec
from onnxnas.compress.size import FIXED_BITS, bits_to_mib, bound_bits
from onnxnas.errors import OnnxNasError
from onnxnas.lut.key import keyed_block, keyed_head
from onnxnas.lut.table import LatencyTable

IMAGE_BITS = 8  # the input image's activation bits (BOPs)


# ---- relaxed decisions -----------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Placed:
    """A concrete block at the input size it sees: a leaf of a relaxed decision."""

    spec: BlockSpec
    in_hw: int


@dataclasses.dataclass(frozen=True, eq=False)
class Mixture:
    """A relaxed decision: ``weights[i]`` (a 1-D tensor, e.g. Gumbel-softmax) is the share of ``options[i]``."""

    weights: torch.Tensor
    options: tuple["Relaxed", ...]


Relaxed = Union[Placed, Mixture]


@dataclasses.dataclass(frozen=True, eq=False)
class RelaxedArch:
    """Fixed stem and head around one relaxed decision per layer position."""

    resolution: int
    stem: BlockSpec
    layers: tuple[Relaxed, ...]
    head: HeadSpec

    @classmethod
    def of(cls, arch: Arch) -> "RelaxedArch":
        """The one-hot relaxation of a concrete arch (its expected cost is its exact cost)."""
        return cls(arch.resolution, arch.stem, tuple(Placed(s, hw) for s, hw in arch.layer_inputs()), arch.head)

    @property
    def head_hw(self) -> int:
        """Spatial size at the head: every option of a layer has the layer's stride."""
        if not self.layers:
            return self.stem.out_hw(self.resolution)
        leaf = likeliest(self.layers[-1])
        return leaf.spec.out_hw(leaf.in_hw)


def likeliest(node: Relaxed) -> Placed:
    """The leaf reached by following the largest weight at every mixture."""
    while isinstance(node, Mixture):
        node = node.options[int(torch.argmax(node.weights.detach()))]
    return node


def mix(node: Relaxed, price: Callable[[Placed], float]) -> Any:
    """sum_i w_i * value(option_i), accumulated left to right (a float for a leaf, else a tensor)."""
    if isinstance(node, Placed):
        return price(node)
    value: Any = 0.0
    for weight, option in zip(node.weights, node.options):
        value = value + weight * mix(option, price)
    return value


# ---- the protocol --------------------------------------------------------------------
class Cost(Protocol):
    """What every budget is: an exact value for an arch, a differentiable one for relaxed decisions."""

    kind: str
    unit: str

    def exact(self, arch: Arch) -> float: ...

    def expected(self, relaxed: RelaxedArch) -> torch.Tensor: ...


class _BlockSum:
    """A cost that is fixed parts plus one price per layer; subclasses may thread a state
    (BOPs: the activation bits a layer reads) from each layer's likeliest block to the next."""

    kind = ""
    unit = ""

    def _price(self, leaf: Placed, state: Any) -> float:
        raise NotImplementedError

    def _fixed(self, relaxed: RelaxedArch, state: Any) -> float:
        raise NotImplementedError

    def _initial(self, relaxed: RelaxedArch) -> Any:
        return None

    def _after(self, leaf: Placed, state: Any) -> Any:
        return state

    def _total(self, relaxed: RelaxedArch) -> Any:
        state = self._initial(relaxed)
        values = []
        for layer in relaxed.layers:
            values.append(mix(layer, functools.partial(self._price, state=state)))
            state = self._after(likeliest(layer), state)
        total: Any = self._fixed(relaxed, state)
        for value in values:
            total = total + value
        return total

    def exact(self, arch: Arch) -> float:
        return float(self._total(RelaxedArch.of(arch)))

    def expected(self, relaxed: RelaxedArch) -> torch.Tensor:
        return torch.as_tensor(self._total(relaxed))


# ---- LUT latency -----------------------------------------------------------------------
def arch_precision(arch: Arch) -> str:
    """``int8`` when any weight is quantized (sub-32-bit weights deploy as INT8), else ``fp32``."""
    specs: list[BlockSpec | HeadSpec] = [arch.stem, *arch.layers, arch.head]
    quantized = any(getattr(s, "weight_bits", 32) < 32 or any(g.weight_bits < 32 for _, gs in s.filter_groups for g in gs)
                    for s in specs)
    return "int8" if quantized else "fp32"


def _wrong_precision(table: LatencyTable, wanted: str, what: str) -> OnnxNasError:
    h = table.header
    command = (f"onnxnas build-lut --device {h.get('device', {}).get('name', 'DEVICE')} --space "
               f"{h.get('space', {}).get('name', 'SPACE')} --backend {h.get('backend', {}).get('name', 'BACKEND')} "
               f"--precision {wanted}")
    return OnnxNasError(f"{what} needs a {wanted} latency table, this one is {table.precision}", where=table.source,
                        fix=f"build one with: {command}")


class LatencyCost(_BlockSum):
    """Section 4's calibrated prediction: block medians, the per-call overhead counted once.

    ``precision`` is the precision asked for (e.g. ``--precision int8``); without it an arch
    with quantized weights needs an int8 table and a float arch a float (fp32/fp16) one.
    Layer prices are ``median - overhead``; the fixed part is ``overhead + stem + head``.
    """

    kind, unit = "latency-us", "us"

    def __init__(self, table: LatencyTable, precision: str | None = None):
        if precision is not None and precision != table.precision:
            raise _wrong_precision(table, precision, f"a {precision} lookup")
        self.table, self.requested = table, precision
        self.overhead = table.per_call_overhead_us

    def check_arch(self, arch: Arch) -> None:
        if self.requested is not None:
            return
        needs = arch_precision(arch)
        if (needs == "int8") != (self.table.precision == "int8"):
            raise _wrong_precision(self.table, needs, f"a {needs} arch")

    def exact(self, arch: Arch) -> float:
        self.check_arch(arch)
        return self.table.arch_latency(arch)

    def block_us(self, spec: BlockSpec, in_hw: int) -> float:
        """A block's latency inside a network (µs): its median net of the overhead; a skip costs nothing."""
        if spec.type == "skip":
            return 0.0
        return self.table.latency(keyed_block(spec, in_hw, self.table.precision, self.table.batch_size).key) - self.overhead

    def fixed_us(self, stem: BlockSpec, resolution: int, head: HeadSpec, head_hw: int) -> float:
        """Stem + head + the network's one per-call overhead (µs)."""
        t = self.table
        stem_us = t.latency(keyed_block(stem, resolution, t.precision, t.batch_size).key)
        head_us = t.latency(keyed_head(head, head_hw, t.precision, t.batch_size).key)
        return self.overhead + (stem_us - self.overhead) + (head_us - self.overhead)

    def _price(self, leaf: Placed, state: Any) -> float:
        return self.block_us(leaf.spec, leaf.in_hw)

    def _fixed(self, relaxed: RelaxedArch, state: Any) -> float:
        return self.fixed_us(relaxed.stem, relaxed.resolution, relaxed.head, relaxed.head_hw)


# ---- params and MACs ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Counts:
    """Per block: PyTorch parameters, deployed parameters (BN folded), MACs, SE/classifier MACs."""

    params: int
    deployed_params: int
    macs: int
    side_macs: int

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))


def _conv_counts(conv: ConvShape, in_hw: int) -> tuple[Counts, int]:
    """A conv + BN (no conv bias): BN's gamma/beta fold into one bias per filter when deployed."""
    out_hw = conv.out_hw(in_hw)
    macs = out_hw * out_hw * conv.weights
    return Counts(conv.weights + 2 * conv.out_chs, conv.weights + conv.out_chs, macs, 0), out_hw


@functools.lru_cache(maxsize=65536)
def block_counts(spec: BlockSpec, in_hw: int) -> Counts:
    """Counts of one layer at its input size (cached: specs are frozen and hashable)."""
    total, hw = Counts(0, 0, 0, 0), in_hw
    for conv in spec.convs():
        counts, hw = _conv_counts(conv, hw)
        total = total + counts
    for se in spec.se_convs():  # 1x1 convs with biases on the pooled tensor
        n = se.weights + se.out_chs
        total = total + Counts(n, n, se.weights, se.weights)
    return total


def head_counts(head: HeadSpec, in_hw: int) -> Counts:
    conv, _ = _conv_counts(head.convs()[0], in_hw)
    fc = head.hidden_chs * head.num_classes
    return conv + Counts(fc + head.num_classes, fc + head.num_classes, fc, fc)


def arch_counts(arch: Arch) -> Counts:
    """The whole network: stem, layers, head (classifier MACs count as MACs and as side MACs)."""
    total = block_counts(arch.stem, arch.resolution)
    for spec, hw in arch.layer_inputs():
        total = total + block_counts(spec, hw)
    return total + head_counts(arch.head, RelaxedArch.of(arch).head_hw)


class CountCost(_BlockSum):
    """params (PyTorch count), deployed params (BN folded: what the ONNX file holds) or MACs (batch 1)."""

    unit = ""
    FIELDS = {"params": "params", "deployed-params": "deployed_params", "macs": "macs"}

    def __init__(self, kind: str):
        self.kind, self.field = kind, self.FIELDS[kind]

    def _price(self, leaf: Placed, state: Any) -> float:
        return float(getattr(block_counts(leaf.spec, leaf.in_hw), self.field))

    def _fixed(self, relaxed: RelaxedArch, state: Any) -> float:
        fixed = block_counts(relaxed.stem, relaxed.resolution) + head_counts(relaxed.head, relaxed.head_hw)
        return float(getattr(fixed, self.field))


# ---- BOPs --------------------------------------------------------------------------------
Runs = tuple[tuple[int, int], ...]  # (channels, bits) runs over a tensor's channels


def _runs(pairs: list[tuple[int, int]]) -> Runs:
    merged: list[list[int]] = []
    for count, bits in pairs:
        if merged and merged[-1][1] == bits:
            merged[-1][0] += count
        else:
            merged.append([count, bits])
    return tuple((c, b) for c, b in merged)


def _expand(runs: Runs) -> list[int]:
    return [bits for count, bits in runs for _ in range(count)]


def default_bits(weight_bits: int) -> tuple[int, int]:
    """(weight, activation) bits of a conv without filter groups: the layer's weight bits, and
    8-bit output activations when those weights are quantized, 32 when they are float."""
    return weight_bits, 8 if weight_bits < 32 else 32


@functools.lru_cache(maxsize=65536)
def conv_bops(conv: ConvShape, out_hw: int, in_bits: Runs, filters: tuple[FilterGroup, ...]) -> float:
    """docs/design.md §12: ``H W sum_f k^2 (b_w(f) sum_c b_a(c) + n_f log2(2^b_w(f) k^2 sum_c 2^b_a(c)))``
    over the input channels c that filter f reads (its conv group's slice; n_f = C_in / groups)."""
    k2, n = conv.kernel_size ** 2, conv.in_chs // conv.groups
    act = _expand(in_bits)
    weight = [g.weight_bits for g in filters for _ in range(g.filters)]
    per_group_out = conv.out_chs // conv.groups
    total = 0.0
    for j in range(conv.groups):
        reads = act[j * n:(j + 1) * n]
        sum_bits, sum_pow = sum(reads), sum(2.0 ** b for b in reads)
        for bw in weight[j * per_group_out:(j + 1) * per_group_out]:
            total += k2 * (bw * sum_bits + n * math.log2(2.0 ** bw * k2 * sum_pow))
    return out_hw * out_hw * total


def _conv_groups(spec: BlockSpec | HeadSpec, conv: ConvShape, weight_bits: int) -> tuple[FilterGroup, ...]:
    groups = spec.groups_of(conv.name)
    return groups or (FilterGroup(conv.out_chs, *default_bits(weight_bits)),)


@functools.lru_cache(maxsize=65536)
def block_bops(spec: BlockSpec | HeadSpec, in_hw: int, in_bits: Runs) -> tuple[float, Runs]:
    """BOPs of a block's searched convs and the activation bits of its output (SE gating and the
    residual add keep the bits of conv_pwl's groups; a skip passes its input through)."""
    weight_bits = getattr(spec, "weight_bits", 32)
    total, hw, bits = 0.0, in_hw, in_bits
    for conv in spec.convs():
        groups = _conv_groups(spec, conv, weight_bits)
        hw = conv.out_hw(hw)
        total += conv_bops(conv, hw, bits, groups)
        bits = _runs([(g.filters, g.act_bits) for g in groups])
    return total, bits


class BopsCost(_BlockSum):
    """Bit operations of every searched conv (stem, blocks, head 1x1); SE convs and the classifier
    are excluded (their MACs are ``Counts.side_macs``).

    Conventions: the image is 8 bits; a conv with filter groups takes each group's bits; one
    without takes :func:`default_bits` of its layer's ``weight_bits`` (the stem's spec, 32 for
    the head), so a float conv is 32:32. In a relaxation a layer reads the output bits of the
    previous layer's likeliest block.
    """

    kind, unit = "bops", ""

    def _initial(self, relaxed: RelaxedArch) -> Runs:
        return block_bops(relaxed.stem, relaxed.resolution, ((relaxed.stem.in_chs, IMAGE_BITS),))[1]

    def _price(self, leaf: Placed, state: Runs) -> float:
        return block_bops(leaf.spec, leaf.in_hw, state)[0]

    def _after(self, leaf: Placed, state: Runs) -> Runs:
        return block_bops(leaf.spec, leaf.in_hw, state)[1]

    def _fixed(self, relaxed: RelaxedArch, state: Runs) -> float:
        stem = block_bops(relaxed.stem, relaxed.resolution, ((relaxed.stem.in_chs, IMAGE_BITS),))[0]
        return stem + block_bops(relaxed.head, relaxed.head_hw, state)[0]


# ---- compressed size -------------------------------------------------------------------
def _convs_bits(spec: BlockSpec | HeadSpec, bits: int, nonzero: float) -> float:
    """Bound bits of a block's conv weights: per filter group where it has them, else at ``bits``."""
    total = 0.0
    for conv in spec.convs():
        per_filter = conv.weights // conv.out_chs
        for g in spec.groups_of(conv.name) or (FilterGroup(conv.out_chs, bits, 0),):
            total += bound_bits(g.filters * per_filter, g.weight_bits, nonzero)
    return total


@functools.lru_cache(maxsize=65536)
def block_size_bits(spec: BlockSpec) -> float:
    """``(s b + H(s)) N`` of a layer (SE convs included, no biases or BN), or of the stem at 8 bits dense."""
    if spec.type == "skip":
        return 0.0
    se = sum(c.weights for c in spec.se_convs())
    return _convs_bits(spec, spec.weight_bits, spec.nonzero_fraction) + bound_bits(se, spec.weight_bits, spec.nonzero_fraction)


def head_size_bits(head: HeadSpec) -> float:
    return _convs_bits(head, FIXED_BITS, 1.0) + bound_bits(head.hidden_chs * head.num_classes, FIXED_BITS, 1.0)


class SizeCost(_BlockSum):
    """Section 7's compressed-size bound in MiB; stem, head and classifier at 8 bits, dense."""

    kind, unit = "size", "MiB"

    def _price(self, leaf: Placed, state: Any) -> float:
        return bits_to_mib(block_size_bits(leaf.spec))

    def _fixed(self, relaxed: RelaxedArch, state: Any) -> float:
        stem = _convs_bits(relaxed.stem, FIXED_BITS, 1.0)
        return bits_to_mib(stem + head_size_bits(relaxed.head))

    def num_weights(self, arch: Arch) -> int:
        """N of the whole network: conv/linear weight elements (SE included, no biases, no BN)."""
        return sum(layer.num_weights for layer in size_report(arch).layers)


@dataclasses.dataclass(frozen=True)
class LayerSize:
    """One row of :func:`size_report`: a layer's N, its nominal bits and sparsity, its bound."""

    name: str  # "stem", "layers.3", "head", "classifier"
    num_weights: int
    bits: int
    nonzero_fraction: float
    bound_bits: float


@dataclasses.dataclass(frozen=True)
class SizeReport:
    layers: tuple[LayerSize, ...]

    @property
    def total_bits(self) -> float:
        return sum(layer.bound_bits for layer in self.layers)

    @property
    def total_mib(self) -> float:
        return bits_to_mib(self.total_bits)


def size_report(arch: Arch) -> SizeReport:
    """:class:`SizeCost` layer by layer (what the manifest, compressed.bin and the benches print)."""
    def weights(spec: BlockSpec | HeadSpec) -> int:
        return sum(c.weights for c in spec.convs()) + (sum(c.weights for c in spec.se_convs())
                                                       if isinstance(spec, BlockSpec) else 0)

    rows = [LayerSize("stem", weights(arch.stem), FIXED_BITS, 1.0, _convs_bits(arch.stem, FIXED_BITS, 1.0))]
    rows += [LayerSize(f"layers.{i}", weights(spec), spec.weight_bits, spec.nonzero_fraction, block_size_bits(spec))
             for i, spec in enumerate(arch.layers) if spec.type != "skip"]
    classifier = arch.head.hidden_chs * arch.head.num_classes
    rows += [LayerSize("head", weights(arch.head), FIXED_BITS, 1.0, _convs_bits(arch.head, FIXED_BITS, 1.0)),
             LayerSize("classifier", classifier, FIXED_BITS, 1.0, bound_bits(classifier, FIXED_BITS, 1.0))]
    return SizeReport(tuple(rows))


# ---- budgets -----------------------------------------------------------------------------
BUDGET_KINDS = ("bops", "deployed-params", "latency-us", "macs", "params", "size")
_SIZE_UNITS = {"MiB": 1.0, "KiB": 1.0 / 1024, "GiB": 1024.0}


def make_cost(kind: str, table: LatencyTable | None = None, precision: str | None = None,
              where: str = "--budget") -> Cost:
    """The cost model of a budget kind; ``latency-us`` needs a table (``--lut``)."""
    if kind == "latency-us":
        if table is None:
            raise OnnxNasError("a latency budget needs a latency table", where=where, fix="pass --lut FILE")
        return LatencyCost(table, precision)
    if kind in CountCost.FIELDS:
        return CountCost(kind)
    if kind == "bops":
        return BopsCost()
    if kind == "size":
        return SizeCost()
    raise OnnxNasError(f"unknown budget kind {kind!r}", where=where, fix=f"use one of: {', '.join(BUDGET_KINDS)}")


@dataclasses.dataclass(frozen=True)
class Budget:
    """A cap: ``kind`` (a :data:`BUDGET_KINDS` name) at most ``limit`` (in the cost's unit; size in MiB)."""

    kind: str
    limit: float

    def cost(self, table: LatencyTable | None = None, precision: str | None = None) -> Cost:
        return make_cost(self.kind, table, precision)

    def __str__(self) -> str:
        return f"{self.kind}={self.limit:g}{'MiB' if self.kind == 'size' else ''}"


def parse_budget(text: str, where: str = "--budget") -> Budget:
    """``params=30000``, ``macs=2e6``, ``latency-us=800``, ``bops=3.2e9``, ``size=1.0MiB`` (or KiB/GiB)."""
    kind, sep, value = text.partition("=")
    kind = kind.strip()
    if not sep:
        raise OnnxNasError(f"budget {text!r} is not KIND=VALUE", where=where,
                           fix=f"write e.g. params=30000; kinds: {', '.join(BUDGET_KINDS)}")
    if kind not in BUDGET_KINDS:
        raise OnnxNasError(f"unknown budget kind {kind!r}", where=where, fix=f"use one of: {', '.join(BUDGET_KINDS)}")
    value, scale = value.strip(), 1.0
    if kind == "size":
        unit = next((u for u in _SIZE_UNITS if value.endswith(u)), None)
        value, scale = (value[: -len(unit)], _SIZE_UNITS[unit]) if unit else (value, 1.0)
    try:
        limit = float(value) * scale
    except ValueError:
        limit = math.nan
    if not math.isfinite(limit) or limit <= 0:
        unit_hint = " (size takes MiB, KiB or GiB, e.g. size=1.0MiB)" if kind == "size" else ""
        raise OnnxNasError(f"budget {text!r}: expected a positive finite number{unit_hint}", where=where,
                           fix=f"write e.g. {kind}=1000" if kind != "size" else "write e.g. size=1.0MiB")
    return Budget(kind, limit)
