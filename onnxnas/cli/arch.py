"""`onnxnas arch stats`: every cost of an arch.json (params, MACs, BOPs, size bound, LUT latency);
`onnxnas arch make`: write an arch of a space (widest, narrowest, random, or a named reference network)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
from pathlib import Path
from typing import Any

from onnxnas.arch import Arch, check_fits_space, load_arch
from onnxnas.cli.options import SEED, add_space_option, bounded_int, finite_float, known_space
from onnxnas.deploy.compressed import checkpoint_coded_size
from onnxnas.errors import OnnxNasError, choice_error
from onnxnas.fileio import atomic_write_json
from onnxnas.lut.table import LatencyTable
from onnxnas.schema import MAX_CLASSES
from onnxnas.search.filterlevel.report import bops_report
from onnxnas.space import SearchSpace, load_space
from onnxnas.space.choose import NAMED_ARCHS, extreme_arch, random_arch
from onnxnas.stats import arch_stats
from onnxnas.timing.environment import warn_if_foreign


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("arch", help="inspect an arch.json")
    commands = parser.add_subparsers(dest="arch_command", required=True, parser_class=type(parser))
    stats = commands.add_parser("stats", help="params, MACs, BOPs, compressed size bound, and LUT latency")
    stats.add_argument("arch", type=Path)
    stats.add_argument("--lut", type=Path, default=None, help="latency table to predict the latency from")
    stats.add_argument("--precision", default=None, choices=("fp32", "fp16", "int8"),
                       help="precision the latency is asked for (default: int8 for quantized archs, else float)")
    stats.add_argument("--weights", type=Path, default=None, help="checkpoint whose entropy-coded size to report")
    stats.add_argument("--space", default=None, help="space file, when the arch's space is not built in")
    stats.add_argument("--json", action="store_true", help="print the numbers as JSON")
    stats.set_defaults(func=run_stats)
    make = commands.add_parser("make", help="write an arch of a space: the widest, the narrowest, a random or a named one")
    add_space_option(make)
    which = make.add_mutually_exclusive_group(required=True)
    which.add_argument("--widest", action="store_true", help="largest kernel, SE where offered, widest hidden, no skips")
    which.add_argument("--narrowest", action="store_true",
                       help="smallest kernel, SE only where forced, narrowest hidden, every skippable layer skipped")
    which.add_argument("--random", type=SEED, metavar="SEED", help="a uniformly sampled arch (as lut validate draws them)")
    which.add_argument("--name", help=f"a reference network: {', '.join(NAMED_ARCHS)}")
    make.add_argument("--weight-bits", type=bounded_int(1, 32), default=32,
                      help="weight bits of every layer, from the space's options (default: %(default)s)")
    make.add_argument("--nonzero-fraction", type=finite_float(0, 1, low_open=True), default=1.0,
                      help="non-zero weight fraction of every layer, from the space's options (default: %(default)s)")
    make.add_argument("--num-classes", type=bounded_int(1, MAX_CLASSES), default=None,
                      help="classifier outputs (default: the space's)")
    make.add_argument("--out", type=Path, default=None, help="arch.json to write (default: print it)")
    make.set_defaults(func=run_make)


def run_stats(args: argparse.Namespace) -> int:
    arch = load_arch(args.arch)
    known_space(arch, args.space, str(args.arch))
    table = None
    if args.lut:
        table = LatencyTable.load(args.lut)
        if table.header.get("space", {}).get("name") != arch.space:
            raise OnnxNasError(f"table is for space {table.header.get('space', {}).get('name')!r}, the arch for "
                               f"{arch.space!r}", where=str(args.lut), fix="pass a table built for the arch's space")
    result: dict[str, Any] = {"arch": str(args.arch), "space": arch.space, "derived": arch.derived,
                              "resolution": arch.resolution, "depth": arch.depth, "layers": len(arch.layers),
                              **arch_stats(arch, table, args.precision)}
    if table is not None:  # warned only once the table has proven usable, so an error stays one line
        warn_if_foreign(table)
        result.update(lut=str(args.lut), lut_device=table.header.get("device", {}).get("name"),
                      lut_backend=table.header.get("backend", {}).get("name"), lut_precision=table.precision)
    filter_bops = bops_report(arch)
    if filter_bops is not None:
        result["bops_deployed"] = filter_bops["deployed"]
    if args.weights:
        coded = checkpoint_coded_size(arch, args.weights)
        result["coded_bytes"] = coded.coded_bytes if coded else None
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    kind = "derived from" if arch.derived else "space"
    print(f"{args.arch}: {kind} {arch.space} at {arch.resolution}x{arch.resolution}, {arch.depth} of "
          f"{len(arch.layers)} layers active")
    for name, value in _rows(result):
        print(f"  {name:<17}{value}")
    return 0


def _rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("params", f"{r['params']:,} ({r['params'] / 1e6:.3f} M)"),
            ("deployed params", f"{r['deployed_params']:,} (BN folded)"),
            ("MACs", f"{r['macs']:,} ({r['macs'] / 1e9:.3f} G)"),
            ("BOPs", f"{r['bops']:,.0f} ({r['bops'] / 1e9:.3f} G; SE + classifier excluded, their MACs "
                     f"{r['side_macs']:,})"),
            *([("BOPs deployed", f"{r['bops_deployed']:,.0f} ({r['bops_deployed'] / 1e9:.3f} G; filter groups on "
                                  "INT8 kernels, 8:8)")] if "bops_deployed" in r else []),
            ("size bound", f"{r['size_mib']:.2f} MiB ({r['size_mib'] * 2**23:,.0f} bits, {r['num_weights']:,} weights)")]
    if "coded_bytes" in r:
        coded = r["coded_bytes"]
        rows.append(("coded size", "no INT8 weights (every layer is float)" if coded is None
                     else f"{coded / 2**20:.3f} MiB ({coded:,} bytes, compressed.bin)"))
    if "latency_us" in r:
        rows.append(("latency", f"{r['latency_us']:.2f} us ({r['lut_device']}, {r['lut_backend']}, "
                                f"{r['lut_precision']}; from {r['lut']})"))
    return rows


def run_make(args: argparse.Namespace) -> int:
    space = load_space(args.space)
    _check_compression_flags(space, args.weight_bits, args.nonzero_fraction)
    arch = _made(space, args)
    check_fits_space(arch, space, f"arch make --space {args.space}")
    if args.out is None:
        print(json.dumps(arch.to_dict(), indent=2))
        return 0
    atomic_write_json(args.out, arch.to_dict())
    stats = arch_stats(arch, None, None)
    print(f"wrote {args.out}: {arch.provenance['name']} arch of {space.name}, {arch.depth} of {len(arch.layers)} layers "
          f"active, {stats['params']:,} params, {stats['macs']:,} MACs")
    return 0


def _check_compression_flags(space: SearchSpace, weight_bits: int, nonzero_fraction: float) -> None:
    """Every stage must offer the asked bits and fraction (they apply to every layer)."""
    for i, stage in enumerate(space.stages):
        for flag, value, options in (("--weight-bits", weight_bits, stage.weight_bits),
                                     ("--nonzero-fraction", nonzero_fraction, stage.nonzero_fractions)):
            if not any(math.isclose(value, option, abs_tol=1e-9) for option in options):
                raise OnnxNasError(f"{value:g} is not offered by stage {i} of space {space.name!r} "
                                   f"(options {[float(o) if isinstance(o, float) else o for o in options]})",
                                   where=flag, fix=f"pass one of the options, or drop {flag}")


def _made(space: SearchSpace, args: argparse.Namespace) -> Arch:
    """The arch the flags ask for, compression fields applied."""
    compression = {"weight_bits": args.weight_bits, "nonzero_fraction": args.nonzero_fraction}
    if args.widest or args.narrowest:
        return extreme_arch(space, widest=args.widest, num_classes=args.num_classes, **compression)
    if args.random is not None:
        arch = random_arch(space, random.Random(args.random))
        arch = dataclasses.replace(arch, provenance={"method": "random", "name": f"random{args.random}"})
    else:
        if args.name not in NAMED_ARCHS:
            raise choice_error("arch name", args.name, tuple(NAMED_ARCHS), where="--name")
        needed, build = NAMED_ARCHS[args.name]
        if space.name != needed:
            raise OnnxNasError(f"{args.name} is an arch of space {needed!r}, not {space.name!r}", where="--name",
                               fix=f"pass --space {needed}")
        arch = build(space)
    layers = tuple(layer if layer.type == "skip" else dataclasses.replace(layer, **compression) for layer in arch.layers)
    return dataclasses.replace(arch, layers=layers, head=space.head_spec(args.num_classes or arch.head.num_classes))
