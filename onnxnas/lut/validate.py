"""`lut validate`: compare LUT sums against whole networks timed end to end, and calibrate.

Random archs of the space are built, exported and timed with the table's own backend and
protocol. A block timed alone pays one inference call's fixed cost (session dispatch,
input binding, output allocation) that a whole network pays once, so a prediction is
``sum(block medians) - c * (units - 1)``. The build measures ``c`` on an Identity model;
validation fits ``c`` by least squares on half of the archs and reports the error on the
other, held-out half, so the stored figures are not judged on the data they were fitted to.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import kendalltau
from tqdm import tqdm

from onnxnas.blocks.builder import build_model
from onnxnas.errors import OnnxNasError
from onnxnas.fileio import atomic_write_bytes
from onnxnas.lut.key import arch_units
from onnxnas.lut.table import LatencyTable
from onnxnas.space.choose import random_arch
from onnxnas.space.spec import SearchSpace
from onnxnas.timing.base import TimingBackend, TimingProtocol
from onnxnas.timing.onnx_file import export_for_timing, int8_flavor


def error_metrics(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float | None]:
    """MAPE, max error, bias (percent) and Kendall tau; tau is None where undefined (ties, one
    sample), since a NaN must never reach the header (it is not JSON)."""
    errors = (predicted - measured) / measured
    tau = float(kendalltau(predicted, measured).statistic) if len(measured) > 1 else math.nan
    return {"samples": int(len(measured)), "mape_pct": float(100 * np.abs(errors).mean()),
            "max_error_pct": float(100 * np.abs(errors).max()), "kendall_tau": tau if math.isfinite(tau) else None,
            "mean_bias_pct": float(100 * errors.mean())}


def tau_text(tau: float | None) -> str:
    return "undefined (ties)" if tau is None else f"{tau:.3f}"


@dataclasses.dataclass
class ValidationReport:
    """Per arch: measured end-to-end median, sum of its unit medians, and its unit count."""

    measured_us: np.ndarray
    unit_sums_us: np.ndarray
    unit_counts: np.ndarray
    archs: list[str]
    build_overhead_us: float

    def predicted(self, overhead_us: float) -> np.ndarray:
        return self.unit_sums_us - overhead_us * (self.unit_counts - 1)

    @property
    def calibration_half(self) -> np.ndarray:
        return np.arange(len(self.measured_us)) % 2 == 0

    def fitted_overhead_us(self) -> float:
        """Least-squares per-call overhead on the calibration half (even-numbered archs)."""
        part = self.calibration_half
        extra_calls = self.unit_counts[part] - 1
        fitted = float(np.sum((self.unit_sums_us[part] - self.measured_us[part]) * extra_calls) / np.sum(extra_calls ** 2))
        if not math.isfinite(fitted):
            raise OnnxNasError(f"the per-call overhead fit is {fitted} (timings {self.measured_us.tolist()[:4]}...)",
                               fix="rerun 'lut validate' with more --samples")
        return fitted

    def metrics(self) -> dict[str, Any]:
        """Held-out metrics with the fitted overhead (what the table delivers from now on),
        plus all-sample metrics with the overhead the build measured, for comparison."""
        c = self.fitted_overhead_us()
        held_out = ~self.calibration_half
        return {**error_metrics(self.predicted(c)[held_out], self.measured_us[held_out]),
                "fitted_overhead_us": round(c, 3),
                "with_build_overhead": {"overhead_us": self.build_overhead_us,
                                        **error_metrics(self.predicted(self.build_overhead_us), self.measured_us)}}

    def to_dict(self) -> dict[str, Any]:
        predicted = self.predicted(self.fitted_overhead_us())
        return {**self.metrics(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "points": [{"arch": a, "units": int(n), "unit_sum_us": round(float(s), 3),
                            "predicted_us": round(float(p), 3), "measured_us": round(float(m), 3),
                            "held_out": bool(not c)}
                           for a, n, s, p, m, c in zip(self.archs, self.unit_counts, self.unit_sums_us, predicted,
                                                       self.measured_us, self.calibration_half)]}


def validate_table(table: LatencyTable, space: SearchSpace, backend: TimingBackend, protocol: TimingProtocol,
                   samples: int, workdir: Path, *, seed: int = 0, rounds: int = 3,
                   progress: bool = True) -> ValidationReport:
    """Time ``samples`` random archs end to end and pair each with its LUT unit sum.

    Each arch is timed in ``rounds`` interleaved passes over all archs and keeps its fastest
    median: a slow spell of a shared machine then hits one pass of an arch, not all of them.
    """
    table.check_space(space)
    rng = random.Random(seed)
    archs = [random_arch(space, rng, skip_probability=0.3) for _ in range(samples)]
    units = [arch_units(arch, table.precision, table.batch_size) for arch in archs]
    for arch_units_ in units:  # fail before any timing if the table cannot predict them
        table.require(u.key for u in arch_units_)
    paths = [export_for_timing(build_model(arch), arch.input_shape, workdir / f"validate-{index}.onnx", table.precision,
                               int8_flavor(backend.name))
             for index, arch in enumerate(archs)]
    measured = np.full(len(archs), np.inf)
    with tqdm(total=rounds * len(archs), desc="lut validate", unit="run", disable=not progress) as bar:
        for _ in range(rounds):
            for index, path in enumerate(paths):
                measured[index] = min(measured[index], backend.measure_onnx(path, protocol).median_us)
                bar.update()
    return ValidationReport(
        measured_us=measured,
        unit_sums_us=np.array([sum(table.entries[u.key].median_us for u in us) for us in units]),
        unit_counts=np.array([len(us) for us in units]),
        archs=[arch.hash for arch in archs],
        build_overhead_us=float(table.header.get("calibration", {}).get("measured_overhead_us",
                                                                         table.per_call_overhead_us)))


def apply_calibration(table: LatencyTable, report: ValidationReport) -> None:
    """Store the report and the fitted per-call overhead in the header; predictions use it from now on."""
    calibration = table.header.setdefault("calibration", {})
    calibration.setdefault("measured_overhead_us", table.per_call_overhead_us)
    calibration["per_call_overhead_us"] = report.fitted_overhead_us()
    calibration["source"] = "lut validate (least squares on the calibration half)"
    table.header["validation"] = report.to_dict()


def plot_report(report: ValidationReport, path: Path, title: str) -> Path:
    """PNG scatter of predicted against measured latency, held-out archs marked, with y = x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = report.metrics()
    predicted = report.predicted(report.fitted_overhead_us())
    held_out = ~report.calibration_half
    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    ax.scatter(report.measured_us[~held_out], predicted[~held_out], s=18, color="tab:gray", label="calibration half")
    ax.scatter(report.measured_us[held_out], predicted[held_out], s=18, color="tab:blue", label="held out")
    values = np.concatenate([report.measured_us, predicted])
    low, high = values.min() * 0.95, values.max() * 1.05
    ax.plot([low, high], [low, high], color="black", linewidth=1, linestyle="--", label="predicted = measured")
    ax.set(xlim=(low, high), ylim=(low, high), xlabel="measured end-to-end latency (us)",
           ylabel="LUT-predicted latency (us)")
    ax.set_title(f"{title}\nheld out: MAPE {metrics['mape_pct']:.2f}%  max {metrics['max_error_pct']:.2f}%  "
                 f"tau {tau_text(metrics['kendall_tau'])}  (n={metrics['samples']})", fontsize=10)
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())
