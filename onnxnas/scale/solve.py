"""Widths for a budget: bisection on log tau (or log r for the uniform baseline), then a fill pass.

``w_l(t) = clamp(g * round(x_l(t) / g), g, max_l)`` with ``x_l(t) = alpha_l t^beta_l`` for a fit
or ``r * n_l`` for uniform scaling. The budget is a cap under any Cost: the largest t whose
rounded network fits is found by bisection, then one granularity step at a time goes to the
variable with the largest rounding remainder while the network stays within the budget.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

from onnxnas.arch import Arch
from onnxnas.cost import Budget, Cost
from onnxnas.errors import OnnxNasError
from onnxnas.scale.fit import Fit
from onnxnas.scale.variables import WidthPlan

BISECTION_STEPS = 60
MAX_EXPANSIONS = 200  # doublings/halvings of t while bracketing the budget


@dataclasses.dataclass(frozen=True)
class Solution:
    """A solved width vector and how it was reached."""

    t: float  # tau for a fit, r for uniform scaling
    widths: tuple[int, ...]
    overrides: tuple[dict[str, Any], ...]
    cost: float
    budget: Budget
    extrapolated: bool
    monotone: bool = True  # False: a larger t fit where a smaller did not (e.g. a LUT latency not monotone in width)

    @property
    def gap(self) -> float:
        """Relative distance under the cap (cost / limit - 1, so <= 0)."""
        return self.cost / self.budget.limit - 1.0


def round_widths(x: Sequence[float], g: int, maxes: Sequence[int]) -> list[int]:
    return [max(min(g * round(v / g), m), min(g, m)) for v, m in zip(x, maxes)]


def check_monotone(fit: Fit, source: str) -> None:
    """Bisection needs costs that grow with tau: every beta must be >= 0."""
    for law in fit.laws:
        if law.beta < 0:
            raise OnnxNasError(f"iteration {fit.iteration}: width variable {law.name} has beta {law.beta:.4f} < 0, so "
                               "the cost is not monotone in tau and bisection cannot solve the budget", where=source,
                               fix="pick another iteration's fit with --use-iteration, or descend longer "
                                   "(--pretrain-epochs, --prune-every)")


def check_budget_range(plan: WidthPlan, cost: Cost, budget: Budget, g: int) -> None:
    """A budget below the smallest legal network (every width at g) or above the largest (8x) is an error."""
    _check_range(_pricer(plan, cost), budget, plan, g)


def _check_range(price: Callable[[list[int]], float], budget: Budget, plan: WidthPlan, g: int) -> None:
    """Only the end on the budget's side of the input network is priced: a budget under the input's cost is
    under the largest network's too (costs grow with width, as the bisection assumes), and pricing the
    largest (8x every width) would time giant blocks for a latency cost."""
    maxes = plan.max_widths
    if budget.limit <= price(plan.base_widths):
        low_cost = price(round_widths([0.0] * len(maxes), g, maxes))
        if low_cost > budget.limit:
            raise OnnxNasError(f"budget {budget} is below the smallest legal network ({low_cost:,.6g} with every "
                               f"width at {g})", where="--budget",
                               fix=f"raise the budget to at least {low_cost:,.6g}, or lower --granularity")
        return
    high_cost = price(list(maxes))
    if high_cost < budget.limit:
        raise OnnxNasError(f"budget {budget} is above the largest legal network ({high_cost:,.6g} with every width at "
                           "8x the input's)", where="--budget", fix=f"lower the budget to at most {high_cost:,.6g}")


def _solve(curve: Callable[[float], list[float]], t0: float, price: Callable[[list[int]], float], budget: Budget,
           plan: WidthPlan, g: int) -> tuple[float, list[int], list[dict[str, Any]], float, bool]:
    maxes, names = plan.max_widths, [v.name for v in plan.variables]
    _check_range(price, budget, plan, g)

    seen: dict[float, bool] = {}

    def fits(log_t: float) -> bool:
        seen[log_t] = price(round_widths(curve(math.exp(log_t)), g, maxes)) <= budget.limit
        return seen[log_t]

    lo = hi = math.log(t0)
    for _ in range(MAX_EXPANSIONS):
        if fits(lo):
            break
        lo -= math.log(2.0)
    else:
        raise OnnxNasError(f"budget {budget}: no tau along the fit gives a network within it", where="--budget",
                           fix="raise the budget, or use the uniform baseline")
    for _ in range(MAX_EXPANSIONS):
        if not fits(hi):
            break
        hi += math.log(2.0)
    if fits(hi):  # the curve saturates at the width caps below the budget
        lo = hi
    for _ in range(BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    t = math.exp(lo)
    x = curve(t)
    widths = round_widths(x, g, maxes)
    remainder = [v / g - w / g for v, w in zip(x, widths)]
    overrides: list[dict[str, Any]] = []
    cheaper_when_wider = False
    while True:
        current = price(widths)
        for v in sorted(range(len(widths)), key=lambda i: -remainder[i]):
            if widths[v] + g > maxes[v]:
                continue
            trial = widths[:v] + [widths[v] + g] + widths[v + 1:]
            cheaper_when_wider |= price(trial) < current
            if price(trial) <= budget.limit:
                overrides.append({"variable": names[v], "from": widths[v], "to": trial[v]})
                widths, remainder[v] = trial, remainder[v] - 1.0
                break
        else:
            break
    ordered = [ok for _, ok in sorted(seen.items())]
    monotone = ordered == sorted(ordered, reverse=True) and not cheaper_when_wider  # as t grows: fits, ..., then never
    return t, widths, overrides, price(widths), monotone


def _pricer(plan: WidthPlan, cost: Cost) -> Callable[[list[int]], float]:
    cache: dict[tuple[int, ...], float] = {}

    def price(widths: list[int]) -> float:
        key = tuple(widths)
        if key not in cache:
            cache[key] = cost.exact(plan.apply(widths))
        return cache[key]
    return price


def solve_fit(plan: WidthPlan, fit: Fit, cost: Cost, budget: Budget, g: int, source: str) -> Solution:
    """NeuralScale's widths for ``budget`` from one iteration's power laws."""
    check_monotone(fit, source)
    t0 = math.sqrt(fit.tau_range[0] * fit.tau_range[1])
    t, widths, overrides, reached, monotone = _solve(fit.widths, t0, _pricer(plan, cost), budget, plan, g)
    outside = not fit.tau_range[0] <= t <= fit.tau_range[1]
    return Solution(t, tuple(widths), tuple(overrides), reached, budget, outside, monotone)


def solve_uniform(plan: WidthPlan, cost: Cost, budget: Budget, g: int) -> Solution:
    """The baseline: every input width times one factor r, solved the same way."""
    bases = plan.base_widths
    t, widths, overrides, reached, monotone = _solve(lambda r: [r * b for b in bases], 1.0, _pricer(plan, cost), budget,
                                                     plan, g)
    return Solution(t, tuple(widths), tuple(overrides), reached, budget, t > 1.0, monotone)


def solution_arch(plan: WidthPlan, solution: Solution, fit: Fit | None, g: int, extra: dict[str, Any]) -> Arch:
    """The derived arch with ``provenance.method = "neuralscale"`` and the solve's record."""
    record: dict[str, Any] = {
        "tau" if fit is not None else "r": solution.t,
        "rounding": {"mode": "nearest", "granularity": g, "min": g},
        "budget": str(solution.budget), "cost_reached": solution.cost, "gap": solution.gap,
        "overrides": list(solution.overrides), "extrapolated": solution.extrapolated, "monotone": solution.monotone,
        "widths": dict(zip((v.name for v in plan.variables), solution.widths)),
    }
    if fit is not None:
        record.update(iteration=fit.iteration, variables=[law.to_dict() for law in fit.laws])
    method = "neuralscale" if fit is not None else "uniform"
    return plan.apply(solution.widths, {"method": method, "neuralscale" if fit is not None else "uniform": record,
                                        **extra})
