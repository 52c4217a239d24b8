"""The op set ``--ops "2:2,2:4,3:3,8:8"``: (weight bits, output-activation bits) pairs, in search order."""

from __future__ import annotations

import dataclasses

from onnxnas.errors import OnnxNasError

FLOAT_BITS = 32
DEFAULT_OPS = "2:2,2:4,3:3,8:8"
MAX_OPS = 16


@dataclasses.dataclass(frozen=True)
class Op:
    """One compression op of a filter: its weights on a ``weight_bits`` grid, its output on ``act_bits``."""

    weight_bits: int
    act_bits: int

    def __str__(self) -> str:
        return f"{self.weight_bits}:{self.act_bits}"


def _bits(text: str, what: str, spec: str) -> int:
    stripped = text.strip()
    if not stripped.isdigit() or len(stripped) > 3:
        raise OnnxNasError(f"{what} bits {stripped!r} of op {spec!r} is not an integer", where="--ops",
                           fix='write ops as WEIGHT:ACT bit pairs, e.g. --ops "2:2,2:4,3:3,8:8"')
    bits = int(stripped)
    if not 1 <= bits <= FLOAT_BITS:
        raise OnnxNasError(f"{what} bits {bits} of op {spec!r} are outside 1..32", where="--ops",
                           fix="use 1..8 (integer grids inside INT8) or 32 (float)")
    if 8 < bits < FLOAT_BITS:
        raise OnnxNasError(f"{what} bits {bits} of op {spec!r} have no deployable format (INT8 holds 1..8 bits)",
                           where="--ops", fix="use 1..8, or 32 for float")
    return bits


def parse_ops(text: str) -> tuple[Op, ...]:
    """``"2:2,2:4"`` -> (Op(2, 2), Op(2, 4)); malformed, repeated or out-of-range ops are one-line errors."""
    parts = [p for p in text.split(",")]
    if not text.strip() or len(parts) > MAX_OPS or any(not p.strip() for p in parts):
        raise OnnxNasError(f"{text[:60]!r} is not a comma list of 1 to {MAX_OPS} WEIGHT:ACT ops", where="--ops",
                           fix='e.g. --ops "2:2,2:4,3:3,8:8"')
    ops = []
    for part in parts:
        weight, sep, act = part.partition(":")
        if not sep:
            raise OnnxNasError(f"op {part.strip()!r} is not WEIGHT:ACT", where="--ops", fix='e.g. --ops "2:2,2:4,3:3,8:8"')
        ops.append(Op(_bits(weight, "weight", part.strip()), _bits(act, "activation", part.strip())))
    if len(set(ops)) != len(ops):
        repeated = next(op for op in ops if ops.count(op) > 1)
        raise OnnxNasError(f"op {repeated} is given twice", where="--ops", fix="list each op once")
    return tuple(ops)


def format_ops(ops: tuple[Op, ...]) -> str:
    return ",".join(map(str, ops))
