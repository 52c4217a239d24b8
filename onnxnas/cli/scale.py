"""`onnxnas scale`: NeuralScale widths for parameter, MAC or latency budgets (docs/design.md §11)."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from onnxnas.arch import load_arch
from onnxnas.cli.options import (MAX_BATCH, MAX_BATCHES, MAX_EPOCHS, SEED, add_arch_space_option, bounded_int,
                                 finite_float, known_space)
from onnxnas.cost import Budget, Cost, LatencyCost, parse_budget
from onnxnas.data import load_data
from onnxnas.errors import OnnxNasError
from onnxnas.fileio import atomic_write_json
from onnxnas.lock import exclusive_output
from onnxnas.scale.descent import DescentConfig, read_rows
from onnxnas.scale.iterate import ScaleConfig, run_iterations
from onnxnas.scale.latency import TimedLatencyCost
from onnxnas.scale.plot import plot_fit, plot_widths
from onnxnas.scale.solve import check_budget_range, solution_arch, solve_fit, solve_uniform
from onnxnas.scale.variables import RESIDUAL_MODES, WidthPlan
from onnxnas.space import SearchSpace
from onnxnas.timing.environment import warn_if_foreign

_SUFFIXES = {"K": 1e3, "M": 1e6, "G": 1e9}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("scale", help="NeuralScale: per-layer widths for a params, MACs or latency budget")
    parser.add_argument("arch", type=Path, help="any arch.json (a space's arch, a search result, a derived arch)")
    parser.add_argument("--data", default="digits", help="digits, synthetic, or an ImageFolder directory (default: %(default)s)")
    parser.add_argument("--budget", action="append", default=[], help="KIND=VALUE, e.g. params=30000, macs=2e6, "
                        "latency-us=800 (with --lut); repeatable")
    parser.add_argument("--budgets", default=None, help="one kind, several values: params=0.25M,0.5M,1M")
    parser.add_argument("--lut", type=Path, default=None, help="latency table for latency-us budgets")
    add_arch_space_option(parser)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--resume", action="store_true", help="continue after the last finished iteration in --out")
    parser.add_argument("--iterations", type=bounded_int(1, 1000), default=15, help="(default: %(default)s)")
    parser.add_argument("--use-iteration", type=bounded_int(1, 1000), default=None,
                        help="solve the budgets with this iteration's fit (default: the last)")
    parser.add_argument("--pretrain-epochs", type=bounded_int(0, MAX_EPOCHS), default=10, help="(default: %(default)s)")
    parser.add_argument("--residual", choices=RESIDUAL_MODES, default="tied",
                        help="tied: identity-add groups share a width; projection: 1x1 conv shortcuts (default: %(default)s)")
    parser.add_argument("--granularity", type=bounded_int(1, 1024), default=8, help="width rounding step (default: %(default)s)")
    parser.add_argument("--prune-step", type=bounded_int(1, 100_000), default=10, help="filters removed per step (default: %(default)s)")
    parser.add_argument("--prune-every", type=bounded_int(1, MAX_BATCHES), default=50, help="batches between steps (default: %(default)s)")
    parser.add_argument("--batch-size", type=bounded_int(1, MAX_BATCH), default=64, help="(default: %(default)s)")
    parser.add_argument("--lr", type=finite_float(0, 10, low_open=True), default=0.05, help="pre-training SGD lr (default: %(default)s)")
    parser.add_argument("--descent-lr", type=finite_float(0, 10, low_open=True), default=0.01, help="(default: %(default)s)")
    parser.add_argument("--max-batches", type=bounded_int(1, MAX_BATCHES), default=None, help="cap on batches per pre-training epoch")
    parser.add_argument("--seed", type=SEED, default=0, help="(default: %(default)s)")
    parser.set_defaults(func=run)


def parse_budgets(single: list[str], many: str | None) -> list[Budget]:
    """``--budget KIND=V`` (repeatable) and ``--budgets KIND=V1,V2,...`` (K/M/G suffixes), in order."""
    texts = list(single)
    if many:
        kind, sep, values = many.partition("=")
        if not sep:
            raise OnnxNasError(f"--budgets {many!r} is not KIND=V1,V2,...", where="--budgets", fix="e.g. params=0.25M,0.5M,1M")
        for value in values.split(","):
            match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([KMG]?)\s*", value)
            number = float(match.group(1)) * _SUFFIXES.get(match.group(2), 1.0) if match and _is_float(match.group(1)) else value
            texts.append(f"{kind}={number}")
    if not texts:
        raise OnnxNasError("no budget given", where="--budget", fix="pass --budget params=30000 or --budgets params=0.25M,0.5M")
    return [parse_budget(text, "--budgets" if i >= len(single) else "--budget") for i, text in enumerate(texts)]


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _costs(budgets: list[Budget], lut: Path | None, arch: Any, space: SearchSpace | None, out: Path) -> dict[str, Cost]:
    """One cost per budget kind, checked on the input arch before any training starts; a latency
    cost times the widths its table lacks into ``out/lut.derived.json``."""
    table = None
    if any(b.kind == "latency-us" for b in budgets) and lut is not None:
        from onnxnas.lut.table import LatencyTable

        table = LatencyTable.load(lut)
        recorded = table.header.get("space", {})
        if recorded.get("name") != arch.space or (arch.space_hash and recorded.get("hash") not in (None, arch.space_hash)):
            raise OnnxNasError(f"table is for space {recorded.get('name')!r} (hash {recorded.get('hash')}), the arch for "
                               f"{arch.space!r} (hash {arch.space_hash})", where=str(lut),
                               fix="pass a table built for the arch's space")
    costs = {b.kind: b.cost(table) for b in budgets}
    if table is not None:
        LatencyCost(table).check_arch(arch)
        costs["latency-us"] = TimedLatencyCost(table, out, space, arch.space)
        warn_if_foreign(table)  # once the table has proven usable, so a refusal stays one line
    return costs


def _stem(budget: Budget) -> str:
    return str(budget).replace("=", "-")


def run(args: argparse.Namespace) -> int:
    budgets = parse_budgets(args.budget, args.budgets)
    arch = load_arch(args.arch)
    space = known_space(arch, args.space, str(args.arch))
    if args.use_iteration is not None and args.use_iteration > args.iterations:
        raise OnnxNasError(f"--use-iteration {args.use_iteration} is past --iterations {args.iterations}",
                           where="--use-iteration", fix=f"pick 1..{args.iterations}")
    if args.out.exists() and not args.out.is_dir():
        raise OnnxNasError("--out exists and is not a folder", where=str(args.out), fix="pass a folder path")
    cfg = ScaleConfig(iterations=args.iterations, pretrain_epochs=args.pretrain_epochs, residual=args.residual,
                      granularity=args.granularity, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      max_batches=args.max_batches,
                      descent=DescentConfig(prune_step=args.prune_step, prune_every=args.prune_every, lr=args.descent_lr))
    plan = WidthPlan.of(arch, args.residual)
    if any(b.kind == "latency-us" for b in budgets) and args.lut is None:
        raise OnnxNasError("a latency budget needs a latency table", where="--budget", fix="pass --lut FILE")
    data = load_data(args.data, arch.resolution, arch.in_chs)
    with exclusive_output(args.out / ".scale.lock", "scale output"):
        costs = _costs(budgets, args.lut, arch, space, args.out)
        for budget in budgets:  # before any training: the range does not depend on the fit
            check_budget_range(plan, costs[budget.kind], budget, args.granularity)
        fits = run_iterations(plan, data, cfg, args.out, resume=args.resume)
        fit = fits[(args.use_iteration or len(fits)) - 1]
        rows = read_rows(args.out / "descent" / f"iter_{fit.iteration}.csv", plan)
        plot_fit(fit, rows, args.out / "fit.png")
        found, uniform, summary = [], [], []
        extra = {"input_arch": str(args.arch), "input_arch_hash": arch.hash, "residual": args.residual, "seed": args.seed}
        for budget in budgets:
            cost = costs[budget.kind]
            ns = solve_fit(plan, fit, cost, budget, args.granularity, str(args.out / "fits" / f"iter_{fit.iteration}.json"))
            un = solve_uniform(plan, cost, budget, args.granularity)
            found.append(ns)
            uniform.append(un)
            for name, solution in (("neuralscale", ns), ("uniform", un)):
                if not solution.monotone:
                    print(f"onnxnas: warning: {budget}: the {name} cost is not monotone along its scale (e.g. LUT "
                          "latencies that fall as widths grow); bisection found a feasible point, maybe not the largest",
                          file=sys.stderr)
            paths = []
            for solution, use_fit, suffix in ((ns, fit, ""), (un, None, ".uniform")):
                path = args.out / "archs" / f"{_stem(budget)}{suffix}.arch.json"
                solution_arch(plan, solution, use_fit, args.granularity, extra).save(path)
                paths.append(str(path))
            summary.append({"budget": str(budget), "neuralscale": {"arch": paths[0], "tau": ns.t, "cost": ns.cost,
                                                                    "gap": ns.gap, "extrapolated": ns.extrapolated},
                            "uniform": {"arch": paths[1], "r": un.t, "cost": un.cost, "gap": un.gap}})
            print(f"{budget}: neuralscale {ns.cost:,.6g} ({100 * ns.gap:+.2f}%, tau {ns.t:,.0f}"
                  f"{', extrapolated' if ns.extrapolated else ''}) widths {list(ns.widths)}; uniform "
                  f"{un.cost:,.6g} ({100 * un.gap:+.2f}%, r {un.t:.3f}) -> {paths[0]}")
        plot_widths([v.name for v in plan.variables], found, uniform, args.out / "widths.png")
        timed = costs.get("latency-us")
        if isinstance(timed, TimedLatencyCost):
            print(f"latency table: timed {timed.timed} new key(s) with the table's backend -> {timed.save()}")
        atomic_write_json(args.out / "summary.json", {"iteration": fit.iteration, "budgets": summary})
    return 0
