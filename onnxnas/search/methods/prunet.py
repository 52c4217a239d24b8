"""PruNet (tiered pruning DNAS): Prunode widths, progressive block pruning, layer skipping."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from onnxnas.cli.options import MAX_EPOCHS, bounded_int, finite_float, float_list
from onnxnas.data import load_data
from onnxnas.errors import OnnxNasError
from onnxnas.lut.table import LatencyTable
from onnxnas.search.config import PrunetConfig
from onnxnas.search.distributed import init_distributed, shutdown
from onnxnas.search.loop import output_lock
from onnxnas.search.runner import SearchJob
from onnxnas.search.sweep import format_results, run_sweep, variants
from onnxnas.space import load_space

_DEFAULTS = PrunetConfig()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("prunet (docs/design.md §6)")
    group.add_argument("--alpha", type=float_list(0, 100), default=[_DEFAULTS.alpha],
                       help="latency weight, or a comma list to sweep; larger is faster (default: %(default)s)")
    group.add_argument("--lambda", dest="lam", type=float_list(0, 10, low_open=True), default=[_DEFAULTS.lam],
                       help="scale of the block beside a new skip, or a comma list to sweep (default: %(default)s)")
    group.add_argument("--beta", type=finite_float(0, 10, low_open=True), default=_DEFAULTS.beta, help="latency exponent (default: %(default)s)")
    group.add_argument("--phi", type=finite_float(0, 10, low_open=True), default=_DEFAULTS.phi, help="scale of a new skip (default: %(default)s)")
    group.add_argument("--tau", type=finite_float(0, 100, low_open=True), default=_DEFAULTS.tau, help="constant Gumbel-softmax temperature (default: %(default)s)")
    group.add_argument("--t-init", type=finite_float(0, 1), default=_DEFAULTS.t_init,
                       help="pruning threshold after warm-up, <= 1/max(N_l) (default: %(default)s)")
    group.add_argument("--t-final", type=finite_float(0, 1), default=_DEFAULTS.t_final,
                       help="pruning threshold at the last epoch (default: %(default)s)")
    group.add_argument("--warmup-epochs", type=bounded_int(0, MAX_EPOCHS), default=_DEFAULTS.warmup_epochs,
                       help="epochs with frozen architecture weights (default: %(default)s)")
    group.add_argument("--arch-lr", type=finite_float(0, 10, low_open=True), default=_DEFAULTS.arch_lr,
                       help="Adam learning rate of the architecture weights (default: %(default)s)")


def config_from_args(args: argparse.Namespace) -> tuple[PrunetConfig, list[float], list[float]]:
    alphas, lambdas = args.alpha, args.lam
    cfg = PrunetConfig(epochs=args.epochs, warmup_epochs=args.warmup_epochs, alpha=alphas[0], lam=lambdas[0],
                       beta=args.beta, phi=args.phi, tau=args.tau, t_init=args.t_init, t_final=args.t_final,
                       lr=args.lr, arch_lr=args.arch_lr, weight_decay=args.weight_decay, batch_size=args.batch_size,
                       max_batches=args.max_batches, seed=args.seed, workers=args.workers)
    return cfg, alphas, lambdas


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise OnnxNasError("--device cuda: no CUDA device is visible", fix="use --device cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def run(args: argparse.Namespace) -> int:
    cfg, alphas, lambdas = config_from_args(args)
    space = load_space(args.space)
    for alpha in alphas:
        for lam in lambdas:
            PrunetConfig(**{**cfg.to_dict(), "alpha": alpha, "lam": lam}).validate(space)
    if args.lut is None:
        raise OnnxNasError("--method prunet needs a latency table", where="--lut",
                           fix=f"pass --lut FILE (from 'onnxnas build-lut --space {space.name}')")
    table = LatencyTable.load(args.lut)
    table.check_space(space)
    device = _device(args.device)
    ctx = init_distributed(device)
    try:
        data = load_data(args.data, space.resolution, space.in_chs)
        job = SearchJob(space, table, Path(args.lut), data, ctx, device, Path(args.out), cfg)
        with output_lock(job.ctx, job.out):
            results = run_sweep(job, variants(alphas, lambdas), args.resume)
    finally:
        shutdown(ctx)
    if ctx.is_main:
        print(format_results(results))
    return 0
