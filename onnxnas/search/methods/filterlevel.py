"""Filter-level heterogeneous compression (docs/design.md §12): per-filter ops under a BOPs budget.

``onnxnas search --method filterlevel --arch ARCH.json --budget-bops B [--mode quant|prune]``
searches the given concrete arch (a space's, or a derived one) and writes ``arch.json`` with
per-conv ``filter_groups``, ``weights.pt`` with the trained grids, ``candidates.json`` (every
configuration the feasibility pass priced, and the homogeneous ones) and ``metrics.jsonl``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import torch

from onnxnas.arch import Arch, check_filter_ops, check_fits_space, load_arch
from onnxnas.cli.options import MAX_EPOCHS, bounded_int, finite_float
from onnxnas.data import load_data
from onnxnas.errors import OnnxNasError
from onnxnas.fileio import atomic_write_json, file_sha256
from onnxnas.schema import Fields
from onnxnas.search.checkpoint import load_search_state, save_weights
from onnxnas.search.distributed import barrier, init_distributed, search_device, shutdown
from onnxnas.search.filterlevel.config import FilterLevelConfig
from onnxnas.search.filterlevel.estimators import ESTIMATORS, sample_configuration
from onnxnas.search.filterlevel.feasibility import Candidate, feasible
from onnxnas.search.filterlevel.ops import DEFAULT_OPS, format_ops, parse_ops
from onnxnas.search.filterlevel.problem import Problem, parse_bops_budget
from onnxnas.search.filterlevel.slots import MODES, Configuration
from onnxnas.search.filterlevel.trainer import FilterLevelTrainer
from onnxnas.search.loop import CHECKPOINTS, check_config, output_lock, restore, train_until
from onnxnas.space import BUILTIN_SPACES, load_space

_D = FilterLevelConfig()
CANDIDATES_FILE = "candidates.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filterlevel (docs/design.md §12; --tau is shared with prunet)")
    group.add_argument("--arch", type=Path, default=None, help="the arch.json to compress (any arch, derived ones included)")
    group.add_argument("--mode", default=_D.mode, choices=MODES,
                       help="quant: an op per filter; prune: slimmable hidden widths (default: %(default)s)")
    group.add_argument("--ops", default=DEFAULT_OPS, help="WEIGHT:ACT bit pairs, in group order (default: %(default)s)")
    group.add_argument("--budget-bops", default=None,
                       help="BOPs cap: absolute (3.2e9) or relative to the arch at the largest op (0.5x)")
    group.add_argument("--estimator", default=_D.estimator, choices=ESTIMATORS,
                       help="alpha gradient: eq. 3's score function, or Gumbel-softmax (default: %(default)s)")
    group.add_argument("--samples", type=bounded_int(1, 1000), default=_D.samples,
                       help="score estimator: configurations per alpha step (default: %(default)s)")
    group.add_argument("--final-samples", type=bounded_int(0, 10_000), default=_D.final_samples,
                       help="configurations drawn at the end for the feasibility pass (default: %(default)s)")
    group.add_argument("--bops-weight", type=finite_float(0, 1000), default=_D.lam,
                       help="lambda of L_acc + lambda * (BOPs / target)^2 (default: %(default)s)")
    group.add_argument("--pretrain-epochs", type=bounded_int(0, MAX_EPOCHS), default=_D.pretrain_epochs,
                       help="float epochs before the search, counted in --epochs (default: %(default)s)")
    group.add_argument("--alpha-lr", type=finite_float(0, 100, low_open=True), default=_D.arch_lr,
                       help="SGD learning rate of alpha, x0.999 per step (default: %(default)s)")


def _problem(args: argparse.Namespace) -> tuple[Problem, Arch]:
    if args.arch is None:
        raise OnnxNasError("--method filterlevel compresses a given network", where="--arch",
                           fix="pass --arch ARCH.json (e.g. examples/tiny.arch.json or a search result)")
    arch = load_arch(args.arch)
    if arch.space in BUILTIN_SPACES:
        check_fits_space(arch, load_space(arch.space), str(args.arch))
    if args.budget_bops is None:
        raise OnnxNasError("--method filterlevel needs a budget", where="--budget-bops",
                           fix="pass --budget-bops 3.2e9 (absolute) or --budget-bops 0.5x (relative)")
    if args.estimator == "gumbel" and args.mode == "prune":
        raise OnnxNasError("the Gumbel estimator relaxes per-filter ops; pruning mode's binomial widths have no "
                           "relaxation here", where="--estimator", fix="use --estimator score with --mode prune")
    return Problem.of(arch, parse_ops(args.ops), args.mode, str(args.arch)), arch


def _config(args: argparse.Namespace, target: float) -> FilterLevelConfig:
    if args.epochs <= args.pretrain_epochs:
        raise OnnxNasError(f"--epochs {args.epochs} leaves no search epoch after --pretrain-epochs {args.pretrain_epochs}",
                           where="--epochs", fix=f"use --epochs {args.pretrain_epochs + 1} or more")
    return FilterLevelConfig(mode=args.mode, ops=format_ops(parse_ops(args.ops)), target_bops=target,
                             estimator=args.estimator, samples=args.samples, final_samples=args.final_samples,
                             lam=args.bops_weight, tau=args.tau, epochs=args.epochs,
                             pretrain_epochs=args.pretrain_epochs, lr=args.lr, arch_lr=args.alpha_lr,
                             weight_decay=args.weight_decay, batch_size=args.batch_size, max_batches=args.max_batches,
                             seed=args.seed, workers=args.workers)


def _own_fields(state: Fields) -> None:
    state.object("weight_opt")
    state.object("arch_opt")
    own = state.object("filterlevel")
    own.integer("arch_steps", low=0)
    own.boolean("ranges_set")
    own.list("last_samples")
    own.done()


@torch.no_grad()
def accuracy(trainer: FilterLevelTrainer, config: Configuration, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Top-1 on the validation split of the network under one configuration (eval mode)."""
    net = trainer.net
    net.eval()
    net.set_configuration(config)
    correct = sum(int((net(x.to(trainer.device)).argmax(1) == y.to(trainer.device)).sum()) for x, y in batches)
    return correct / sum(len(y) for _, y in batches)


def run(args: argparse.Namespace) -> int:
    problem, source_arch = _problem(args)
    target = parse_bops_budget(args.budget_bops, problem)
    cfg = _config(args, target)
    out, device = Path(args.out), search_device(args.device)
    ctx = init_distributed(device)
    try:
        data = load_data(args.data, source_arch.resolution, source_arch.in_chs)
        if data.num_classes != source_arch.head.num_classes:
            raise OnnxNasError(f"the arch's head has {source_arch.head.num_classes} classes, --data {args.data} has "
                               f"{data.num_classes}", where=str(args.arch), fix="set head.num_classes to the data's classes")
        with output_lock(ctx, out):
            trainer = FilterLevelTrainer(cfg, problem, data.train, ctx, device)
            last = out / CHECKPOINTS / "last.pt"
            if last.exists() and not args.resume:
                raise OnnxNasError("holds a started search", where=str(out), fix="pass --resume to continue it, or choose a new --out")
            if args.resume:
                if not last.exists():
                    raise OnnxNasError("has no search checkpoint to resume", where=str(out), fix="drop --resume to start a new search")
                state = load_search_state(last, cfg.epochs, _own_fields)
                check_config(state["config"], cfg.to_dict(), last, FilterLevelConfig.FLAGS)
                restore(trainer, state, last)
            train_until(trainer, cfg.epochs, last, out / "metrics.jsonl", "filterlevel", ctx,
                        postfix=lambda line: {"bops": f"{line['bops']:.3g}"},
                        nan_fix="lower --lr/--alpha-lr, then rerun with --resume")
            result = _finish(args, trainer, data.val, out)
    finally:
        shutdown(ctx)
    if ctx.is_main:
        print(result)
    return 0


def _finish(args: argparse.Namespace, trainer: FilterLevelTrainer, val: Any, out: Path) -> str:
    problem, cfg = trainer.problem, trainer.cfg
    batches = list(torch.utils.data.DataLoader(val, batch_size=256))
    torch.manual_seed(cfg.seed + trainer.epoch)  # the final draws depend on the run, not on the resume point
    drawn = [sample_configuration(trainer.net) for _ in range(cfg.final_samples)]
    chosen, candidates = feasible(problem, trainer.deterministic(), [*trainer.last_samples, *drawn], cfg.target_bops,
                                  lambda c: accuracy(trainer, c, batches))
    homogeneous = [Candidate(problem.homogeneous(t), f"homogeneous {op}", problem.bops(problem.homogeneous(t)),
                             accuracy(trainer, problem.homogeneous(t), batches))
                   for t, op in enumerate(problem.ops if problem.mode == "quant" else problem.ops[:1])]
    arch = problem.arch_of(chosen.config)
    check_filter_ops(arch, [(op.weight_bits, op.act_bits) for op in problem.ops], "arch.json")
    searched = chosen.bops
    arch = dataclasses.replace(arch, provenance={
        "method": "filterlevel", "hyperparameters": cfg.to_dict(), "source_arch": str(args.arch),
        "source_arch_sha256": file_sha256(args.arch), "budget_bops": cfg.target_bops,
        "reference_bops": problem.reference_bops(), "searched_bops": searched, "selected": chosen.source,
        "val_acc": chosen.val_acc, "seed": cfg.seed, "checkpoint": "weights.pt", "dataset": args.data,
        "world_size": trainer.ctx.world_size})
    if trainer.ctx.is_main:
        ranges, bits = trainer.net.trained_grids(chosen.config)
        hidden = {str(s.layer): list(range(kept)) for s, (kept,) in zip(problem.slots, chosen.config)} \
            if problem.mode == "prune" else {}
        save_weights(out / "weights.pt", arch, trainer.net.deploy_state_dict(), hidden,
                     {"quant_ranges": ranges, "quant_bits": bits})
        atomic_write_json(out / CANDIDATES_FILE, {"target_bops": cfg.target_bops, "chosen": chosen.to_dict(),
                                                  "candidates": [c.to_dict() for c in candidates],
                                                  "homogeneous": [c.to_dict() for c in homogeneous]})
        arch.save(out / "arch.json")
    barrier(trainer.ctx)
    return (f"filterlevel ({cfg.mode}, {cfg.estimator}): {chosen.source} configuration, {searched:.4g} BOPs of "
            f"{cfg.target_bops:.4g} budget ({searched / problem.reference_bops():.3f}x of all-{problem.top}), "
            f"val top-1 {chosen.val_acc:.3f} -> {out / 'arch.json'}")
