"""Per-variable power laws ``n = alpha * tau^beta``: OLS of ln n on ln tau over one descent's rows."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onnxnas.errors import OnnxNasError
from onnxnas.fileio import atomic_write_json, read_json
from onnxnas.scale.descent import DescentRow
from onnxnas.scale.variables import WidthPlan
from onnxnas.schema import Fields

MIN_POINTS = 3


@dataclasses.dataclass(frozen=True)
class PowerLaw:
    layers: tuple[str, ...]
    alpha: float
    beta: float
    r2: float
    n_points: int

    @property
    def name(self) -> str:
        return "+".join(self.layers)

    def __call__(self, tau: float) -> float:
        return self.alpha * tau ** self.beta

    def to_dict(self) -> dict[str, Any]:
        return {"layers": list(self.layers), "alpha": self.alpha, "beta": self.beta, "r2": self.r2,
                "n_points": self.n_points}


@dataclasses.dataclass(frozen=True)
class Fit:
    """One iteration's power laws and the tau range its descent recorded (outside it: extrapolated)."""

    iteration: int
    laws: tuple[PowerLaw, ...]
    tau_range: tuple[float, float]

    def widths(self, tau: float) -> list[float]:
        return [law(tau) for law in self.laws]

    def to_dict(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "tau_range": list(self.tau_range),
                "variables": [law.to_dict() for law in self.laws]}


def fit_power_laws(rows: Sequence[DescentRow], plan: WidthPlan, iteration: int, source: str) -> Fit:
    """OLS per variable; fewer than 3 distinct widths for a variable is an error naming it."""
    if not rows:
        raise OnnxNasError(f"iteration {iteration}: the descent recorded no step at which every width variable had "
                           "lost a filter", where=source,
                           fix="lower --prune-step or raise --prune-every, or give the descent more filters")
    log_tau = np.log([r.tau for r in rows])
    laws = []
    for v, var in enumerate(plan.variables):
        widths = [r.widths[v] for r in rows]
        if len(set(widths)) < MIN_POINTS:
            raise OnnxNasError(f"iteration {iteration}: width variable {var.name} takes only {len(set(widths))} "
                               f"distinct width(s) in the descent ({sorted(set(widths))}); a power law needs "
                               f"{MIN_POINTS}", where=source,
                               fix="lower --prune-step, or --residual projection to untie it, so it is pruned more often")
        y = np.log(widths)
        beta, intercept = np.polyfit(log_tau, y, 1)
        residual = y - (intercept + beta * log_tau)
        spread = float(((y - y.mean()) ** 2).sum())
        laws.append(PowerLaw(var.slots, float(math.exp(intercept)), float(beta),
                             1.0 - float((residual ** 2).sum()) / spread, len(rows)))
    taus = [r.tau for r in rows]
    return Fit(iteration, tuple(laws), (min(taus), max(taus)))


def save_fit(path: Path, fit: Fit) -> Path:
    return atomic_write_json(path, fit.to_dict())


def load_fit(path: Path, plan: WidthPlan) -> Fit:
    """A fit written by :func:`save_fit` for the same width variables."""
    f = Fields(read_json(path, "fit file"), "$", str(path))
    iteration = f.integer("iteration", low=1, high=10_000)
    tau = f.list("tau_range", min_items=2, max_items=2)
    if not all(isinstance(t, (int, float)) and t > 0 for t in tau):
        raise f.fail("tau_range", "expected two positive numbers")
    items = f.list("variables", min_items=len(plan.variables), max_items=len(plan.variables))
    laws = []
    for i, (item, var) in enumerate(zip(items, plan.variables)):
        g = Fields(item, f"$.variables[{i}]", str(path))
        layers = tuple(g.list("layers"))
        if layers != var.slots:
            raise g.fail("layers", f"is {list(layers)}, this arch's variable {i} is {list(var.slots)}",
                         fix="resume only with the arch and --residual the run started with")
        laws.append(PowerLaw(layers, g.number("alpha", low=0.0, low_open=True), g.number("beta"), g.number("r2"),
                             g.integer("n_points", high=10**9)))
        g.done()
    f.done()
    return Fit(iteration, tuple(laws), (float(tau[0]), float(tau[1])))
