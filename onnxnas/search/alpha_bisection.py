"""PruNet under a latency budget: bisect alpha (log scale) over branches of one shared warm-up.

A user with a budget should not sweep alpha by hand. Larger alpha gives faster networks, so
the search first runs the fastest end of the alpha range (if even that misses the budget,
it fails naming the latency it reached), then halves the range in log space towards the
smallest alpha that still meets the budget: smaller alpha, more accuracy. Each branch is a
sweep variant (``variants/<name>/``, checkpointed every epoch), so a killed bisection resumes
without redoing finished branches: the order of alphas depends only on their results.
The feasible branch closest to the budget (by the calibrated LUT) is copied to ``--out``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from onnxnas.errors import OnnxNasError
from onnxnas.fileio import atomic_write_bytes, atomic_write_json, read_regular_bytes
from onnxnas.search.checkpoint import MAX_CHECKPOINT_BYTES
from onnxnas.search.runner import SearchJob, Variant, VariantResult, run_variant, warm_up
from onnxnas.search.sweep import check_out, variant_dir


@dataclasses.dataclass(frozen=True)
class Budget:
    """``--target-latency-us`` and how to search alpha for it."""

    target_us: float
    alpha_low: float = 0.05
    alpha_high: float = 20.0
    branches: int = 6  # the fastest end, then branches - 1 halvings of the log range

    def validate(self) -> "Budget":
        if not (math.isfinite(self.target_us) and self.target_us > 0):
            raise OnnxNasError(f"--target-latency-us must be a positive number of µs, got {self.target_us}")
        if not 0 < self.alpha_low < self.alpha_high:
            raise OnnxNasError(f"--alpha-range needs 0 < LO < HI, got {self.alpha_low:g},{self.alpha_high:g}",
                               fix="e.g. --alpha-range 0.05,20")
        if self.branches < 1:
            raise OnnxNasError(f"--bisect-branches must be >= 1, got {self.branches}")
        return self


def log_midpoint(low: float, high: float) -> float:
    """The geometric mean, to 4 significant digits (stable variant names, same on resume)."""
    return float(f"{math.sqrt(low * high):.4g}")


def pick(results: list[VariantResult], target_us: float) -> VariantResult | None:
    """The branch that meets the budget with the least slack (ties: the smaller alpha), or None."""
    feasible = [r for r in results if r.predicted_latency_us <= target_us]
    return max(feasible, key=lambda r: (r.predicted_latency_us, -r.variant.alpha), default=None)


def run_bisection(job: SearchJob, lam: float, budget: Budget, resume: bool) -> tuple[VariantResult, list[VariantResult]]:
    """The chosen branch (also written to ``job.out``) and every branch run, in order."""
    check_out(job, sorted((job.out / "variants").glob("*")), resume)
    warm_state = warm_up(job, resume, job.out / "warmup-metrics.jsonl")
    tried: list[VariantResult] = []

    def branch(alpha: float) -> VariantResult:
        variant = Variant(alpha, lam)
        result = run_variant(job, variant, warm_state, resume, variant_dir(job.out, variant, single=False))
        tried.append(result)
        return result

    low, high = budget.alpha_low, budget.alpha_high
    fastest = branch(high)
    if fastest.predicted_latency_us > budget.target_us:
        _write_summary(job, budget, tried, None)
        raise OnnxNasError(f"--target-latency-us {budget.target_us:g}: the fastest arch the search reached "
                           f"(--alpha {high:g}) is {fastest.predicted_latency_us:.1f} µs by the LUT",
                           where=str(job.out), fix="raise the upper end of --alpha-range, or allow at least "
                                                   f"{fastest.predicted_latency_us:.1f} µs")
    for _ in range(budget.branches - 1):
        mid = log_midpoint(low, high)
        if mid in (low, high):
            break
        if branch(mid).predicted_latency_us <= budget.target_us:
            high = mid
        else:
            low = mid
    chosen = pick(tried, budget.target_us)
    assert chosen is not None  # the fastest end is feasible
    _write_summary(job, budget, tried, chosen)
    return chosen, tried


def _bisection_record(budget: Budget, tried: list[VariantResult], chosen: VariantResult | None, out: Path) -> dict[str, Any]:
    return {"target_latency_us": budget.target_us, "alpha_range": [budget.alpha_low, budget.alpha_high],
            "branches": [{"alpha": r.variant.alpha, "lambda": r.variant.lam,
                          "predicted_latency_us": r.predicted_latency_us, "search_loss": r.search_loss,
                          "meets_budget": r.predicted_latency_us <= budget.target_us, "converged": r.converged,
                          "arch": str(r.arch_path.relative_to(out))} for r in tried],
            "chosen_alpha": None if chosen is None else chosen.variant.alpha}


def _write_summary(job: SearchJob, budget: Budget, tried: list[VariantResult], chosen: VariantResult | None) -> None:
    """summary.json with the bisection; the chosen arch (provenance + bisection) and weights in --out."""
    if not job.ctx.is_main:
        return
    record = _bisection_record(budget, tried, chosen, job.out)
    summary: dict[str, Any] = {"bisection": record, "best": None}
    if chosen is not None:
        arch = dataclasses.replace(chosen.arch, provenance={**chosen.arch.provenance, "bisection": record})
        weights = chosen.arch_path.parent / chosen.arch.provenance["checkpoint"]
        atomic_write_bytes(job.out / "weights.pt", read_regular_bytes(weights, "search weights", MAX_CHECKPOINT_BYTES))
        arch.save(job.out / "arch.json")
        summary["best"] = "arch.json"
    atomic_write_json(job.out / "summary.json", summary)
