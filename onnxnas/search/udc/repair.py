"""The guarantee (docs/design.md §7): the argmax configuration's exact costs, and the repair pass.

While a constraint is missed, move one block to its next cheaper option (identity for a
skippable layer, else one step down in width, bits or non-zero fraction), picking the move
that saves the most cost per unit of log-probability lost; each move is logged. The
minimum a space can reach is every decision at its cheapest option.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from onnxnas.arch import Arch
from onnxnas.errors import OnnxNasError
from onnxnas.search.udc.constraint import Constraint
from onnxnas.search.udc.options import BLOCK, SKIPPED, LayerOptions, cheapest
from onnxnas.space.choose import make_arch
from onnxnas.space.spec import SearchSpace

Config = list[dict[str, int]]
LOG_PROB_FLOOR = 1e-6  # a move to an option as likely as the current one is nearly free, not infinitely good


@dataclasses.dataclass(frozen=True)
class Configs:
    """Turns option indices into archs of one space."""

    space: SearchSpace
    options: Sequence[LayerOptions]
    num_classes: int

    def arch(self, config: Config, provenance: dict[str, Any] | None = None) -> Arch:
        return make_arch(self.space, [o.choice(c) for o, c in zip(self.options, config)],
                         num_classes=self.num_classes, provenance=provenance)

    def minimum(self, constraint: Constraint) -> float:
        return constraint.exact(self.arch(cheapest(self.options)))


def check_reachable(configs: Configs, constraints: Sequence[Constraint]) -> None:
    """Refuse, before any training, a target that no configuration of the space meets."""
    for c in constraints:
        lowest = configs.minimum(c)
        if not c.met(lowest):
            raise OnnxNasError(f"{c.flag} {c.show(c.target)}: no configuration of space {configs.space.name!r} meets it; "
                               f"the minimum it can reach is {c.show(lowest)}", where=c.flag,
                               fix=f"ask for at least {c.show(lowest)}, or use a space with cheaper options")


def _moves(options: Sequence[LayerOptions], config: Config) -> list[tuple[int, str, int]]:
    moves = []
    for i, (o, c) in enumerate(zip(options, config)):
        if c.get("op", BLOCK) != BLOCK:
            continue
        if o.count("op") > 1:
            moves.append((i, "op", SKIPPED))
        moves += [(i, d, c[d] - 1) for d in ("width", "bits", "sparsity") if c.get(d, 0) > 0]
    return moves


def _log_prob(log_pi: Sequence[dict[str, torch.Tensor]], i: int, decision: str, option: int) -> float:
    return float(log_pi[i][decision][option]) if decision in log_pi[i] else 0.0


def _value(o: LayerOptions, decision: str, index: int) -> Any:
    return {"op": o.ops, "width": [w[0] for w in o.widths], "bits": o.bits, "sparsity": o.fractions}[decision][index]


def repair(configs: Configs, config: Config, log_pi: Sequence[dict[str, torch.Tensor]],
           constraints: Sequence[Constraint]) -> tuple[Config, list[dict[str, Any]]]:
    """The cheapest-per-log-probability moves until every constraint holds; fails naming the one still missed."""
    config = copy.deepcopy(config)
    for c, o in zip(config, configs.options):  # every decision explicit, fixed ones at 0
        for d in ("op", "width", "bits", "sparsity"):
            c.setdefault(d, 0)
    costs = [c.exact(configs.arch(config)) for c in constraints]
    log: list[dict[str, Any]] = []
    while not all(c.met(v) for c, v in zip(constraints, costs)):
        best: tuple[float, tuple[int, str, int], list[float], float] | None = None
        for move in _moves(configs.options, config):
            i, d, new = move
            trial = copy.deepcopy(config)
            trial[i][d] = new
            values = [c.exact(configs.arch(trial)) for c in constraints]
            if any(v > old + 1e-12 for v, old in zip(values, costs)):
                continue
            gain = sum((old - v) / c.target for c, v, old in zip(constraints, values, costs) if not c.met(old))
            if gain <= 0:
                continue
            lost = max(_log_prob(log_pi, i, d, config[i][d]) - _log_prob(log_pi, i, d, new), LOG_PROB_FLOOR)
            if best is None or gain / lost > best[0]:
                best = (gain / lost, move, values, lost)
        if best is None:
            missed = next(c for c, v in zip(constraints, costs) if not c.met(v))
            value = costs[constraints.index(missed)]
            raise OnnxNasError(f"{missed.flag} {missed.show(missed.target)} is missed: the repaired configuration reaches "
                               f"{missed.show(value)}, the minimum the space can reach is "
                               f"{missed.show(configs.minimum(missed))}", where=missed.flag,
                               fix="raise the target, or search a space with cheaper options")
        _, (i, d, new), costs, lost = best
        o = configs.options[i]
        log.append({"layer": i, "decision": d, "from": _value(o, d, config[i][d]), "to": _value(o, d, new),
                    "log_prob_lost": lost, **{c.name: v for c, v in zip(constraints, costs)}})
        config[i][d] = new
    return config, log
