"""`onnxnas arch stats`: every cost of an arch.json (params, MACs, BOPs, size bound, LUT latency)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from onnxnas.arch import check_fits_space, load_arch
from onnxnas.deploy.compressed import checkpoint_coded_size
from onnxnas.errors import OnnxNasError
from onnxnas.search.filterlevel.report import bops_report
from onnxnas.space import BUILTIN_SPACES, load_space
from onnxnas.stats import arch_stats

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


def run_stats(args: argparse.Namespace) -> int:
    arch = load_arch(args.arch)
    if args.space or arch.space in BUILTIN_SPACES:
        check_fits_space(arch, load_space(args.space or arch.space), str(args.arch))
    table = None
    if args.lut:
        from onnxnas.lut.table import LatencyTable

        table = LatencyTable.load(args.lut)
        if table.header.get("space", {}).get("name") != arch.space:
            raise OnnxNasError(f"table is for space {table.header.get('space', {}).get('name')!r}, the arch for "
                               f"{arch.space!r}", where=str(args.lut), fix="pass a table built for the arch's space")
    result: dict[str, Any] = {"arch": str(args.arch), "space": arch.space, "derived": arch.derived,
                              "resolution": arch.resolution, "depth": arch.depth, "layers": len(arch.layers),
                              **arch_stats(arch, table, args.precision)}
    if table is not None:
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
