"""Sweeps over (alpha, lambda): one warm-up, one branch per variant, a summary marking the
best search loss per alpha (the paper picks the lambda with the best final loss)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from onnxnas.errors import OnnxNasError
from onnxnas.fileio import atomic_write_json
from onnxnas.search.loop import CHECKPOINTS
from onnxnas.search.runner import SearchJob, Variant, VariantResult, run_variant, warm_up


def variants(alphas: Sequence[float], lambdas: Sequence[float]) -> list[Variant]:
    return [Variant(a, lam) for a, lam in itertools.product(alphas, lambdas)]


def variant_dir(out: Path, variant: Variant, single: bool) -> Path:
    return out if single else out / "variants" / variant.name


def check_out(job: SearchJob, dirs: list[Path], resume: bool) -> None:
    started = [p for p in [job.warmup_path(), *(d / CHECKPOINTS / "last.pt" for d in dirs)] if p.exists()]
    if started and not resume:
        raise OnnxNasError("holds a started search", where=str(job.out),
                           fix="pass --resume to continue it, or choose a new --out")
    if resume and not started:
        raise OnnxNasError("has no search checkpoint to resume", where=str(job.out),
                           fix="drop --resume to start a new search")


def run_sweep(job: SearchJob, todo: list[Variant], resume: bool) -> list[VariantResult]:
    single = len(todo) == 1
    dirs = [variant_dir(job.out, v, single) for v in todo]
    check_out(job, dirs, resume)
    warm_state = warm_up(job, resume, job.out / ("metrics.jsonl" if single else "warmup-metrics.jsonl"))
    results = [run_variant(job, v, warm_state, resume, d) for v, d in zip(todo, dirs)]
    if not single and job.ctx.is_main:
        atomic_write_json(job.out / "summary.json", summary(results, job.out))
    return results


def best_per_alpha(results: list[VariantResult]) -> dict[float, VariantResult]:
    best: dict[float, VariantResult] = {}
    for r in results:
        if r.variant.alpha not in best or r.search_loss < best[r.variant.alpha].search_loss:
            best[r.variant.alpha] = r
    return best


def summary(results: list[VariantResult], out: Path) -> dict[str, Any]:
    best = best_per_alpha(results)
    rows = [{"alpha": r.variant.alpha, "lambda": r.variant.lam, "search_loss": r.search_loss,
             "predicted_latency_us": r.predicted_latency_us, "depth": r.depth, "converged": r.converged,
             "prunodes": r.arch.provenance["prunodes"],
             "arch": str(r.arch_path.relative_to(out)), "best_for_alpha": best[r.variant.alpha] is r}
            for r in results]
    return {"variants": rows, "best": {f"{a:g}": str(r.arch_path.relative_to(out)) for a, r in best.items()}}


def format_results(results: list[VariantResult]) -> str:
    """A side-by-side table for the terminal; '*' marks the best loss per alpha."""
    best = best_per_alpha(results)
    lines = [f"{'alpha':>6} {'lambda':>6} {'loss':>8} {'LAT us':>9} {'depth':>5}  {'settled':>7}  arch.json"]
    for r in results:
        mark = "*" if best[r.variant.alpha] is r else " "
        settled = "yes" if r.converged else "NO"
        lines.append(f"{r.variant.alpha:>6g} {r.variant.lam:>6g} {r.search_loss:>8.4f} {r.predicted_latency_us:>9.1f} "
                     f"{r.depth:>5}{mark} {settled:>7}  {r.arch_path}")
        lines.append("       prunodes: " + (", ".join(_prunode_note(p) for p in r.arch.provenance["prunodes"]) or "none"))
    return "\n".join(lines)


def _prunode_note(p: dict[str, Any]) -> str:
    """One Prunode in a few characters: layer, final masks, the pick, the weight's preference, settled."""
    state = "settled" if p["settled"] else ("NOT adjacent" if not p["adjacent"] else "undecided")
    return f"L{p['layer']} {p['small']}/{p['large']}->{p['chosen']} (p_large {p['p_large']:.2f}, {state})"
