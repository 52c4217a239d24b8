"""`onnxnas build-lut`: time every candidate block of a space into a latency table."""

from __future__ import annotations

import argparse
from pathlib import Path

from onnxnas.cli.options import add_space_option, add_timing_options, check_precision, make_backend, timing_protocol
from onnxnas.errors import OnnxNasError
from onnxnas.lut.builder import BuildConfig, Shard, build_lut
from onnxnas.lut.table import MAX_INTERPOLATE_EVERY
from onnxnas.schema import MAX_CLASSES, is_identifier
from onnxnas.space import load_space


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("build-lut", help="time every candidate block of a search space into a LUT",
                                   description="Enumerate the unique candidate blocks of a space, export each to ONNX at "
                                               "its in-network shape, time it, and write a latency lookup table. "
                                               "Killed builds resume where they stopped.")
    add_space_option(parser)
    add_timing_options(parser)
    parser.add_argument("--shard", default="0/1", help="build only shard i of N (keys split by a stable hash); "
                                                       "join shards with 'onnxnas lut merge'")
    parser.add_argument("--out", type=Path, default=None,
                        help="table path (default: latency_tables/<space>-<device>-<backend>-<precision>.json)")
    parser.add_argument("--num-classes", type=int, default=None, help="classes of the head (default: the space's)")
    parser.add_argument("--interpolate-every", type=int, default=1, metavar="K",
                        help="time every K-th hidden width and interpolate the rest (flagged in the table)")
    parser.add_argument("--retry-failed", action="store_true", help="time again the keys that failed before")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def default_out(space: str, device: str, backend: str, precision: str, shard: Shard) -> Path:
    """latency_tables/<space>-<device>-<backend>-<precision>.json, from plain names only."""
    for flag, part in (("--space", space), ("--device", device), ("--backend", backend), ("--precision", precision)):
        if not is_identifier(part):
            raise OnnxNasError(f"{flag} {part[:40]!r} cannot name the table file", where=flag,
                               fix="pass a plain name, or choose the file with --out")
    suffix = "" if shard.count == 1 else f".shard-{shard.index}-of-{shard.count}"
    return Path("latency_tables") / f"{space}-{device}-{backend}-{precision}{suffix}.json"


def run(args: argparse.Namespace) -> int:
    space = load_space(args.space)
    shard = Shard.parse(args.shard)
    precision = check_precision(args.precision)
    protocol = timing_protocol(args)
    if not 1 <= args.interpolate_every <= MAX_INTERPOLATE_EVERY:
        raise OnnxNasError(f"--interpolate-every must be in [1, {MAX_INTERPOLATE_EVERY}], got {args.interpolate_every}",
                           fix="e.g. --interpolate-every 2")
    if args.num_classes is not None and not 1 <= args.num_classes <= MAX_CLASSES:
        raise OnnxNasError(f"--num-classes must be in [1, {MAX_CLASSES}], got {args.num_classes}")
    out = args.out
    if out is None:
        from onnxnas.timing.devices import device_spec

        spec = device_spec(args.device)  # names the file; make_backend below checks the hardware once
        out = default_out(space.name, spec.name, args.backend or spec.default_backend, precision, shard)
    if out.is_dir():
        raise OnnxNasError("--out is a directory", where=str(out), fix="pass a file path ending in .json")
    backend, device = make_backend(args, out.with_suffix(".timing.cache"))
    config = BuildConfig(space=space, device=device, backend=backend, protocol=protocol, precision=precision, out=out,
                         shard=shard, num_classes=args.num_classes, interpolate_every=args.interpolate_every,
                         retry_failed=args.retry_failed)
    try:
        table = build_lut(config, progress=not args.no_progress)
    finally:
        close = getattr(backend, "close", None)
        if close is not None:
            close()
    counts = table.summary_counts()
    print(f"wrote {out}: {counts['measured']} measured, {counts['interpolated']} interpolated, "
          f"{counts['failed']} failed; per-call overhead {table.per_call_overhead_us:.2f} us")
    return 0 if counts["failed"] == 0 else 1
