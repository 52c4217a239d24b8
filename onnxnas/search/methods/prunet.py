"""PruNet (tiered pruning DNAS): Prunode widths, progressive block pruning, layer skipping."""

from __future__ import annotations

import argparse
from pathlib import Path

from onnxnas.cli.options import MAX_BATCHES, MAX_EPOCHS, bounded_int, finite_float, float_list
from onnxnas.data import load_data
from onnxnas.errors import OnnxNasError
from onnxnas.lut.table import LatencyTable
from onnxnas.search.alpha_bisection import Budget, run_bisection
from onnxnas.search.config import PrunetConfig
from onnxnas.search.distributed import init_distributed, search_device, shutdown
from onnxnas.search.loop import output_lock
from onnxnas.search.runner import SearchJob
from onnxnas.search.sweep import format_results, run_sweep, variants
from onnxnas.space import load_space

_DEFAULTS = PrunetConfig()
_BUDGET = Budget(target_us=1.0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("prunet (docs/design.md §6)")
    group.add_argument("--alpha", type=float_list(0, 100), default=None,
                       help=f"latency weight, or a comma list to sweep; larger is faster (default: {_DEFAULTS.alpha})")
    group.add_argument("--lambda", dest="lam", type=float_list(0, 10, low_open=True), default=None,
                       help=f"scale of the block beside a new skip, or a comma list to sweep (default: {_DEFAULTS.lam})")
    group.add_argument("--alpha-range", type=float_list(0, 100, low_open=True),
                       default=[_BUDGET.alpha_low, _BUDGET.alpha_high],
                       help="LO,HI: the alphas --target-latency-us bisects between (default: %(default)s)")
    group.add_argument("--bisect-branches", type=bounded_int(1, 64), default=_BUDGET.branches,
                       help="searches --target-latency-us runs: the HI end, then halvings (default: %(default)s)")
    group.add_argument("--beta", type=finite_float(0, 10, low_open=True), default=_DEFAULTS.beta, help="latency exponent (default: %(default)s)")
    group.add_argument("--phi", type=finite_float(0, 10, low_open=True), default=_DEFAULTS.phi, help="scale of a new skip (default: %(default)s)")
    group.add_argument("--tau", type=finite_float(0, 100, low_open=True), default=_DEFAULTS.tau, help="constant Gumbel-softmax temperature (default: %(default)s)")
    group.add_argument("--t-init", type=finite_float(0, 1), default=_DEFAULTS.t_init,
                       help="pruning threshold after warm-up, <= 1/max(N_l) (default: %(default)s)")
    group.add_argument("--t-final", type=finite_float(0, 1), default=_DEFAULTS.t_final,
                       help="pruning threshold at the last epoch (default: %(default)s)")
    group.add_argument("--warmup-epochs", type=bounded_int(0, MAX_EPOCHS), default=_DEFAULTS.warmup_epochs,
                       help="epochs with frozen architecture weights (default: %(default)s)")
    group.add_argument("--min-arch-steps", type=bounded_int(0, MAX_BATCHES), default=_DEFAULTS.min_arch_steps,
                       help="architecture steps a search takes at least, reusing data where 20%% of the batches give "
                            "fewer, so Prunodes settle on small data (0: the paper's 20%% only; default: %(default)s)")
    group.add_argument("--arch-lr", type=finite_float(0, 10, low_open=True), default=_DEFAULTS.arch_lr,
                       help="Adam learning rate of the architecture weights (default: %(default)s)")


def config_from_args(args: argparse.Namespace) -> tuple[PrunetConfig, list[float], list[float]]:
    alphas, lambdas = args.alpha or [_DEFAULTS.alpha], args.lam or [_DEFAULTS.lam]
    cfg = PrunetConfig(epochs=args.epochs, warmup_epochs=args.warmup_epochs, alpha=alphas[0], lam=lambdas[0],
                       beta=args.beta, phi=args.phi, tau=args.tau, t_init=args.t_init, t_final=args.t_final,
                       lr=args.lr, arch_lr=args.arch_lr, min_arch_steps=args.min_arch_steps,
                       weight_decay=args.weight_decay, batch_size=args.batch_size, max_batches=args.max_batches,
                       seed=args.seed, workers=args.workers)
    return cfg, alphas, lambdas


def budget_from_args(args: argparse.Namespace) -> Budget | None:
    """The latency budget, if one was asked for; it replaces --alpha and takes one --lambda."""
    if args.target_latency_us is None:
        return None
    if args.alpha is not None:
        raise OnnxNasError("--alpha and --target-latency-us exclude each other: the budget chooses alpha",
                           fix="drop --alpha (set the bisection's range with --alpha-range LO,HI)")
    if args.lam is not None and len(args.lam) > 1:
        raise OnnxNasError("--target-latency-us takes one --lambda, not a list", fix="pass a single --lambda")
    if len(args.alpha_range) != 2:
        raise OnnxNasError(f"--alpha-range takes two numbers LO,HI, got {len(args.alpha_range)}", fix="e.g. --alpha-range 0.05,20")
    low, high = args.alpha_range
    return Budget(args.target_latency_us, low, high, args.bisect_branches).validate()


def run(args: argparse.Namespace) -> int:
    budget = budget_from_args(args)
    cfg, alphas, lambdas = config_from_args(args)
    if budget is not None:
        alphas = [budget.alpha_low, budget.alpha_high]  # validated at both ends of the range
    space = load_space(args.space)
    for alpha in alphas:
        for lam in lambdas:
            PrunetConfig(**{**cfg.to_dict(), "alpha": alpha, "lam": lam}).validate(space)
    if args.lut is None:
        raise OnnxNasError("--method prunet needs a latency table", where="--lut",
                           fix=f"pass --lut FILE (from 'onnxnas build-lut --space {space.name}')")
    table = LatencyTable.load(args.lut)
    table.check_space(space)
    device = search_device(args.device)
    ctx = init_distributed(device)
    try:
        data = load_data(args.data, space.resolution, space.in_chs)
        job = SearchJob(space, table, Path(args.lut), data, ctx, device, Path(args.out), cfg)
        with output_lock(job.ctx, job.out):
            if budget is None:
                results = run_sweep(job, variants(alphas, lambdas), args.resume)
            else:
                chosen, results = run_bisection(job, lambdas[0], budget, args.resume)
    finally:
        shutdown(ctx)
    if ctx.is_main:
        print(format_results(results))
        if budget is not None:
            print(f"target {budget.target_us:g} µs: alpha {chosen.variant.alpha:g} gives {chosen.predicted_latency_us:.1f} µs "
                  f"by the LUT -> {job.out / 'arch.json'}")
    return 0
