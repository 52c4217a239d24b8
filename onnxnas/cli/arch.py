"""`onnxnas arch stats|check`: inspect an arch.json."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from onnxnas.arch import check_fits_space, load_arch
from onnxnas.blocks.builder import build_model
from onnxnas.errors import OnnxNasError
from onnxnas.space import BUILTIN_SPACES, load_space
from onnxnas.stats import count_stats


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("arch", help="inspect an arch.json")
    commands = parser.add_subparsers(dest="arch_command", required=True, parser_class=type(parser))
    stats = commands.add_parser("stats", help="parameters, MACs, and LUT latency when a table is given")
    stats.add_argument("arch", type=Path)
    stats.add_argument("--lut", type=Path, default=None, help="latency table to predict the latency from")
    stats.add_argument("--space", default=None, help="space file, when the arch's space is not built in")
    stats.add_argument("--json", action="store_true", help="print the numbers as JSON")
    stats.set_defaults(func=run_stats)


def run_stats(args: argparse.Namespace) -> int:
    arch = load_arch(args.arch)
    space_name = args.space or arch.space
    if space_name in BUILTIN_SPACES or args.space:
        check_fits_space(arch, load_space(space_name), str(args.arch))
    stats = count_stats(build_model(arch), arch.input_shape)
    result: dict[str, object] = {"arch": str(args.arch), "space": arch.space, "resolution": arch.resolution,
                                 "depth": arch.depth, "layers": len(arch.layers), **stats.to_dict()}
    if args.lut:
        from onnxnas.lut.table import LatencyTable
        from onnxnas.timing.environment import warn_if_foreign

        table = LatencyTable.load(args.lut)
        warn_if_foreign(table)
        if table.header.get("space", {}).get("name") != arch.space:
            raise OnnxNasError(f"table is for space {table.header['space']['name']!r}, the arch for {arch.space!r}",
                               where=str(args.lut), fix="pass a table built for the arch's space")
        result.update(latency_us=round(table.arch_latency(arch), 3), lut=str(args.lut),
                      lut_device=table.header["device"]["name"], lut_backend=table.header["backend"]["name"])
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.arch}: space {arch.space} at {arch.resolution}x{arch.resolution}, {arch.depth} of "
          f"{len(arch.layers)} layers active")
    print(f"  parameters  {stats.params:,} ({stats.params / 1e6:.2f} M)")
    print(f"  MACs        {stats.macs:,} ({stats.macs / 1e9:.3f} G)")
    if args.lut:
        print(f"  latency     {result['latency_us']:.2f} us ({result['lut_device']}, {result['lut_backend']}; from {args.lut})")
    return 0
