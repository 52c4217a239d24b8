"""`lut validate`: compare LUT sums against whole networks timed end to end.

Random archs of the space are built, exported and timed with the table's own backend
and protocol. The report (MAPE, max error, Kendall tau) goes into the table header.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import random
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import kendalltau
from tqdm import tqdm

from onnxnas.blocks.builder import build_model
from onnxnas.export import export_onnx
from onnxnas.fileio import atomic_write_bytes
from onnxnas.lut.key import arch_units
from onnxnas.lut.table import LatencyTable
from onnxnas.space.choose import random_arch
from onnxnas.space.spec import SearchSpace
from onnxnas.timing.base import TimingBackend, TimingProtocol


@dataclasses.dataclass
class ValidationReport:
    predicted_us: list[float]
    measured_us: list[float]
    archs: list[str]

    def metrics(self) -> dict[str, float]:
        predicted, measured = np.array(self.predicted_us), np.array(self.measured_us)
        errors = np.abs(predicted - measured) / measured
        tau = kendalltau(predicted, measured).statistic if len(measured) > 1 else float("nan")
        return {"samples": len(measured), "mape_pct": float(100 * errors.mean()),
                "max_error_pct": float(100 * errors.max()), "kendall_tau": float(tau),
                "mean_bias_pct": float(100 * np.mean((predicted - measured) / measured))}

    def to_dict(self) -> dict[str, Any]:
        return {**self.metrics(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "points": [{"arch": a, "predicted_us": round(p, 3), "measured_us": round(m, 3)}
                           for a, p, m in zip(self.archs, self.predicted_us, self.measured_us)]}


def validate_table(table: LatencyTable, space: SearchSpace, backend: TimingBackend, protocol: TimingProtocol,
                   samples: int, workdir: Path, *, seed: int = 0, progress: bool = True) -> ValidationReport:
    """Time ``samples`` random archs end to end and pair each with its LUT prediction."""
    table.check_space(space)
    rng = random.Random(seed)
    archs = [random_arch(space, rng, skip_probability=0.3) for _ in range(samples)]
    for arch in archs:  # fail before any timing if the table cannot predict them
        table.require(u.key for u in arch_units(arch, table.precision, table.batch_size))
    report = ValidationReport([], [], [])
    for index, arch in enumerate(tqdm(archs, desc="lut validate", unit="arch", disable=not progress)):
        path = export_onnx(build_model(arch), arch.input_shape, workdir / f"validate-{index}.onnx", table.precision)
        report.measured_us.append(backend.measure_onnx(path, protocol).median_us)
        report.predicted_us.append(table.arch_latency(arch))
        report.archs.append(arch.hash)
    return report


def plot_report(report: ValidationReport, path: Path, title: str) -> Path:
    """PNG scatter of predicted against measured latency, with the y = x line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = report.metrics()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    ax.scatter(report.measured_us, report.predicted_us, s=18, color="tab:blue")
    low = min(report.measured_us + report.predicted_us) * 0.95
    high = max(report.measured_us + report.predicted_us) * 1.05
    ax.plot([low, high], [low, high], color="gray", linewidth=1, linestyle="--", label="predicted = measured")
    ax.set(xlim=(low, high), ylim=(low, high), xlabel="measured end-to-end latency (us)",
           ylabel="LUT-predicted latency (us)",
           title=f"{title}\nMAPE {metrics['mape_pct']:.2f}%  max {metrics['max_error_pct']:.2f}%  "
                 f"tau {metrics['kendall_tau']:.3f}  (n={metrics['samples']})")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())
