"""The final feasibility pass: the sigma(r) = r^2 penalty is soft, so the budget is met here.

Among the sampled configurations and the deterministic one, take the best-validating one within
the budget; failing that, repair the deterministic one by moving filters to cheaper ops (prune
mode: dropping hidden filters) until it fits; failing that, fail loudly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from onnxnas.errors import OnnxNasError
from onnxnas.search.filterlevel.problem import Problem
from onnxnas.search.filterlevel.slots import Configuration

REPAIR_CHUNKS = 16  # a repair step moves ceil(C / 16) filters of one conv


@dataclasses.dataclass(frozen=True)
class Candidate:
    config: Configuration
    source: str  # "deterministic", "sampled", "repaired", "homogeneous 8:8", ...
    bops: float
    val_acc: float | None = None

    def to_dict(self) -> dict[str, object]:
        return {"source": self.source, "bops": self.bops, "val_acc": self.val_acc, "config": [list(c) for c in self.config]}


def _moves(problem: Problem, config: Configuration) -> list[Configuration]:
    """Every one-step move: per slot, ceil(C/16) filters from an op to the next cheaper op (prune: fewer filters)."""
    moves = []
    if problem.mode == "prune":
        for i, (slot, (kept,)) in enumerate(zip(problem.slots, config)):
            step = min(kept - 1, -(-slot.filters // REPAIR_CHUNKS))
            if step > 0:
                moves.append(config[:i] + ((kept - step,),) + config[i + 1:])
        return moves
    order = sorted(range(len(problem.ops)), key=lambda t: problem.bops(problem.homogeneous(t)))
    cheaper = {order[k]: order[k - 1] for k in range(1, len(order))}
    for i, (slot, counts) in enumerate(zip(problem.slots, config)):
        for t, c in enumerate(counts):
            if c and t in cheaper:
                step, moved = min(c, -(-slot.filters // REPAIR_CHUNKS)), list(counts)
                moved[t] -= step
                moved[cheaper[t]] += step
                moves.append(config[:i] + (tuple(moved),) + config[i + 1:])
    return moves


def repair(problem: Problem, config: Configuration, target: float) -> Configuration | None:
    """Greedy: take the move that saves the most BOPs until the configuration fits; None when stuck."""
    bops = problem.bops(config)
    while bops > target:
        priced = [(problem.bops(m), m) for m in _moves(problem, config)]
        if not priced:
            return None
        bops, config = min(priced, key=lambda item: item[0])
    return config


def feasible(problem: Problem, deterministic: Configuration, sampled: Sequence[Configuration], target: float,
             evaluate: Callable[[Configuration], float]) -> tuple[Candidate, list[Candidate]]:
    """The chosen configuration and every candidate considered (with BOPs, and validation accuracy where in budget)."""
    seen: dict[Configuration, str] = {deterministic: "deterministic"}
    for config in sampled:
        seen.setdefault(config, "sampled")
    candidates = []
    for config, source in seen.items():
        bops = problem.bops(config)
        candidates.append(Candidate(config, source, bops, evaluate(config) if bops <= target else None))
    fits = [c for c in candidates if c.val_acc is not None]
    if fits:
        return max(fits, key=lambda c: (c.val_acc, -c.bops)), candidates
    repaired = repair(problem, deterministic, target)
    if repaired is None:
        raise OnnxNasError(f"no configuration meets the budget of {target:.6g} BOPs: none of the {len(candidates)} "
                           f"sampled/deterministic ones does, and repairing the deterministic one got stuck at "
                           f"{problem.bops(deterministic):.6g}", where="--budget-bops",
                           fix="raise --budget-bops, or add cheaper ops to --ops")
    chosen = Candidate(repaired, "repaired", problem.bops(repaired), evaluate(repaired))
    return chosen, [*candidates, chosen]
