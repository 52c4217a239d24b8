"""UDC (docs/design.md §7): width, bits, sparsity and depth under hard size and/or latency caps.

The search runs on the shared epoch loop (checkpoints, ``--resume``, metrics, DDP, lock); at the
end the argmax configuration's exact costs are checked, repaired if over, and an arch is written
only when every constraint holds.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import torch

from onnxnas.arch import Arch
from onnxnas.cli.options import bounded_int, finite_float
from onnxnas.cost import parse_budget, size_report
from onnxnas.data import load_data
from onnxnas.errors import OnnxNasError
from onnxnas.fileio import file_sha256
from onnxnas.lut.table import LatencyTable
from onnxnas.schema import Fields
from onnxnas.search.checkpoint import load_search_state, save_weights
from onnxnas.search.distributed import DistContext, barrier, init_distributed, shutdown
from onnxnas.search.loop import CHECKPOINTS, check_config, output_lock, restore, train_until
from onnxnas.search.udc.coded import coded_size
from onnxnas.search.udc.config import UdcConfig
from onnxnas.search.udc.constraint import Constraint, LatencyModel, SizeModel
from onnxnas.search.udc.repair import Configs, check_reachable, repair
from onnxnas.search.udc.supernet import UdcSupernet
from onnxnas.search.udc.trainer import UdcTrainer
from onnxnas.space import load_space
from onnxnas.space.spec import SearchSpace

_DEFAULTS = UdcConfig()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("udc (docs/design.md §7; --epochs, --warmup-epochs and --target-latency-us apply too)")
    group.add_argument("--target-size", default=None, help="hard cap on the compressed-size bound, e.g. 1.0MiB or 512KiB")
    group.add_argument("--size-margin", type=finite_float(0, 0.5), default=_DEFAULTS.size_margin,
                       help="the search aims at e* (1 - margin) (default: %(default)s)")
    group.add_argument("--penalty-lambda", type=finite_float(0, 1000), default=_DEFAULTS.lam,
                       help="weight of the normalized constraint penalty (default: %(default)s)")
    group.add_argument("--mc-samples", type=bounded_int(1, 1024), default=_DEFAULTS.mc_samples,
                       help="Monte-Carlo samples per step; steps per epoch are divided by it (default: %(default)s)")
    group.add_argument("--sgd-lr", type=finite_float(0, 10, low_open=True), default=_DEFAULTS.lr,
                       help="SGD learning rate of the weights, cosine decay (default: %(default)s)")
    group.add_argument("--pi-lr", type=finite_float(0, 10, low_open=True), default=_DEFAULTS.arch_lr,
                       help="Adam learning rate of the decisions' logits (default: %(default)s)")
    for trick in ("projection", "rejection", "topk"):
        group.add_argument(f"--no-{trick}", action="store_true", help=f"ablation: turn off the {trick} trick")


def config_from_args(args: argparse.Namespace) -> UdcConfig:
    size = None if args.target_size is None else parse_budget(f"size={args.target_size}", where="--target-size").limit
    return UdcConfig(epochs=args.epochs, warmup_epochs=args.warmup_epochs, target_size_mib=size,
                     target_latency_us=args.target_latency_us, size_margin=args.size_margin, lam=args.penalty_lambda,
                     mc_samples=args.mc_samples, lr=args.sgd_lr, arch_lr=args.pi_lr, weight_decay=args.weight_decay,
                     batch_size=args.batch_size, max_batches=args.max_batches, seed=args.seed, workers=args.workers,
                     use_projection=not args.no_projection, use_rejection=not args.no_rejection, use_topk=not args.no_topk)


def constraints_for(cfg: UdcConfig, space: SearchSpace, net: UdcSupernet, num_classes: int,
                    lut: str | None) -> list[Constraint]:
    """The size and/or latency constraints asked for; a latency target needs an int8 table of the space."""
    result = []
    if cfg.target_size_mib is not None:
        size = SizeModel(space, net.options, num_classes)
        result.append(Constraint("size_mib", "--target-size", "MiB", cfg.target_size_mib, cfg.size_margin,
                                 size.expected_mib, size.exact_mib))
    if cfg.target_latency_us is not None:
        if lut is None:
            raise OnnxNasError("--target-latency-us needs a latency table", where="--lut",
                               fix=f"build one with: onnxnas build-lut --device cpu --space {space.name} --precision int8")
        table = LatencyTable.load(lut)
        table.check_space(space)
        latency = LatencyModel(space, net.options, table, num_classes)
        result.append(Constraint("latency_us", "--target-latency-us", "us", cfg.target_latency_us, cfg.size_margin,
                                 latency.expected_us, latency.exact_us))
    return result


def _no_fields(state: Fields) -> None:
    """UDC keeps no fields beyond the loop's common ones (model, optimizers, RNG, metrics)."""


def run(args: argparse.Namespace) -> int:
    if args.device == "cuda":
        raise OnnxNasError("--method udc runs on the CPU in this version", where="--device", fix="use --device cpu or auto")
    cfg = config_from_args(args)
    space = load_space(args.space)
    ctx = init_distributed(torch.device("cpu"))
    try:
        cfg.validate(ctx.world_size)
        data = load_data(args.data, space.resolution, space.in_chs)
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        net = UdcSupernet(space, data.num_classes)
        constraints = constraints_for(cfg, space, net, data.num_classes, args.lut)
        configs = Configs(space, net.options, data.num_classes)
        check_reachable(configs, constraints)
        trainer = UdcTrainer(cfg, net, constraints, data.train, ctx)
        out = Path(args.out)
        last = out / CHECKPOINTS / "last.pt"
        with output_lock(ctx, out):
            if args.resume and last.exists():
                state = load_search_state(last, cfg.epochs, _no_fields)
                check_config(state["config"], cfg.to_dict(), last, UdcConfig.FLAGS)
                restore(trainer, state, last)
            train_until(trainer, cfg.epochs, last, out / "metrics.jsonl", "udc", ctx,
                        postfix=lambda line: {k: f"{v:.4g}" for k, v in line["expected"].items()},
                        nan_fix="lower --sgd-lr/--pi-lr, then rerun with --resume")
            arch = finish(trainer, configs, constraints, out, ctx, args, data.name)
    finally:
        shutdown(ctx)
    if ctx.is_main:
        prov = arch.provenance
        print(f"udc: {out / 'arch.json'}: depth {arch.depth}, " + ", ".join(
            f"{c.name} {c.show(prov['exact'][c.name])} <= {c.show(c.target)}" for c in constraints)
            + (f" after {len(prov['repair'])} repair move(s)" if prov["repair"] else ""))
    return 0


def finish(trainer: UdcTrainer, configs: Configs, constraints: list[Constraint], out: Path, ctx: DistContext,
           args: argparse.Namespace, dataset: str) -> Arch:
    """The guarantee: exact costs of the argmax configuration, repaired if over; then arch.json + weights.pt."""
    net = trainer.net
    log_pi = [{d: torch.log_softmax(l.detach(), 0) for d, l in decisions.items()} for decisions in net.decisions()]
    found = net.argmax_config()
    found_costs = {c.name: c.exact(configs.arch(found)) for c in constraints}
    config, moves = repair(configs, found, log_pi, constraints)
    arch = configs.arch(config)
    exact = {c.name: c.exact(arch) for c in constraints}
    state = net.deploy_state_dict([layer.type == "skip" for layer in arch.layers])
    ranges = net.quant_ranges(config)
    coded = coded_size(arch, state, ranges)
    provenance: dict[str, Any] = {
        "method": "udc", "hyperparameters": trainer.cfg.to_dict(), "seed": trainer.cfg.seed,
        "targets": {c.name: c.target for c in constraints}, "aims": {c.name: c.aim for c in constraints},
        "argmax_before_repair": found_costs, "exact": exact, "repair": moves,
        "predicted_size_bits": {"bound": size_report(arch).total_bits, "coded": coded.total_bytes * 8,
                                "coded_precision": "int8"},
        "search_loss": trainer.metrics[-1]["search_loss"], "checkpoint": "weights.pt", "dataset": dataset,
        "world_size": ctx.world_size,
    }
    if args.lut is not None and trainer.cfg.target_latency_us is not None:
        provenance["lut"] = {"path": str(args.lut), "sha256": file_sha256(args.lut)}
        provenance["predicted_latency_us"] = exact["latency_us"]
    arch = dataclasses.replace(arch, provenance=provenance)
    if not all(c.met(exact[c.name]) for c in constraints):  # repair() raises first; never write a false claim
        raise AssertionError("repair returned a configuration that misses a constraint")
    if ctx.is_main:
        save_weights(out / "weights.pt", arch, state, {}, {"quant_ranges": ranges} if ranges else None)
        arch.save(out / "arch.json")
    barrier(ctx)
    return arch
