"""The paper's Figs. 6 and 8: each variable's fitted power law over its descent points, and the
widths found for each budget beside the uniformly scaled ones."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from onnxnas.plot import _save  # noqa: E402
from onnxnas.scale.descent import DescentRow  # noqa: E402
from onnxnas.scale.fit import Fit  # noqa: E402
from onnxnas.scale.solve import Solution  # noqa: E402


def plot_fit(fit: Fit, rows: list[DescentRow], path: Path) -> Path:
    """Fig. 6: filters per variable against tau (log-log), measured points and the fitted curve."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    taus = np.array([r.tau for r in rows])
    grid = np.geomspace(taus.min(), taus.max(), 100)
    for v, law in enumerate(fit.laws):
        line = ax.plot(grid, law.alpha * grid ** law.beta, label=f"{law.name} (beta {law.beta:.2f}, R2 {law.r2:.3f})")
        ax.scatter(taus, [r.widths[v] for r in rows], s=8, color=line[0].get_color())
    ax.set(xscale="log", yscale="log", xlabel="tau (parameters)", ylabel="filters",
           title=f"architecture descent, iteration {fit.iteration}")
    ax.legend(fontsize=6)
    return _save(fig, path)


def plot_widths(names: list[str], found: list[Solution], uniform: list[Solution], path: Path) -> Path:
    """Fig. 8: per-variable widths of NeuralScale (solid) and uniform scaling (dashed), one colour per budget."""
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names)), 4.5))
    x = np.arange(len(names))
    for ns, un in zip(found, uniform):
        line = ax.plot(x, ns.widths, marker="o", label=f"NeuralScale {ns.budget}")
        ax.plot(x, un.widths, marker="x", linestyle="--", color=line[0].get_color(), label=f"uniform {un.budget}")
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=7)
    ax.set(ylabel="filters", title="widths per variable")
    ax.legend(fontsize=6)
    return _save(fig, path)
