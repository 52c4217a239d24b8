"""`onnxnas lut merge|show|validate`: work with latency tables."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from onnxnas.errors import OnnxNasError
from onnxnas.lut.merge import merge_tables
from onnxnas.lut.table import LatencyTable
from onnxnas.space import BUILTIN_SPACES, load_space
from onnxnas.timing.base import TimingBackend, TimingProtocol


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("lut", help="merge, show or validate latency tables")
    commands = parser.add_subparsers(dest="lut_command", required=True, parser_class=type(parser))

    merge = commands.add_parser("merge", help="join the shards of one build into one table")
    merge.add_argument("shards", nargs="+", type=Path)
    merge.add_argument("--out", type=Path, required=True)
    merge.set_defaults(func=run_merge)

    show = commands.add_parser("show", help="summary: provenance, counts, failures, slowest blocks, validation")
    show.add_argument("table", type=Path)
    show.add_argument("--top", type=int, default=10, help="how many of the slowest blocks to list")
    show.set_defaults(func=run_show)

    validate = commands.add_parser("validate", help="compare LUT sums with end-to-end timings of random archs")
    validate.add_argument("table", type=Path)
    validate.add_argument("--samples", type=int, default=20)
    validate.add_argument("--seed", type=int, default=0)
    validate.add_argument("--rounds", type=int, default=3,
                          help="interleaved timing passes over the archs; each keeps its fastest median")
    validate.add_argument("--space", default=None, help="space file, when the table's space is not built in")
    validate.add_argument("--plot", type=Path, default=None, help="write a PNG scatter of predicted vs measured")
    validate.add_argument("--no-progress", action="store_true")
    validate.set_defaults(func=run_validate)


def run_merge(args: argparse.Namespace) -> int:
    table = merge_tables(args.shards)
    table.save(args.out)
    counts = table.summary_counts()
    print(f"wrote {args.out}: {counts['entries']} entries from {len(args.shards)} shards "
          f"({counts['failed']} failed, {counts['interpolated']} interpolated)")
    return 0


def run_show(args: argparse.Namespace) -> int:
    table = LatencyTable.load(args.table)
    h = table.header
    device = h.get("device", {})
    print(f"{args.table}")
    print(f"  device     {device.get('name')} ({device.get('gpu') or device.get('cpu')})"
          f"{'  [FORCED: hardware did not match]' if device.get('forced') else ''}")
    print(f"  backend    {h['backend']['name']} {h['backend']['version']}, precision {h.get('precision')}")
    print(f"  space      {h['space']['name']} (hash {h['space']['hash']}, {h['space']['resolution']}px), shard {h.get('shard')}")
    p = h.get("protocol", {})
    print(f"  protocol   batch {p.get('batch_size')}, {p.get('warmup_runs')} warm-up, >= {p.get('runs')} runs, "
          f"{p.get('statistic')}, {p.get('threads')} thread(s); per-call overhead {table.per_call_overhead_us:.2f} us")
    print(f"  created    {h.get('created')} on {h.get('host')}")
    counts = table.summary_counts()
    print(f"  entries    {counts['entries']}: {counts['measured']} measured, {counts['interpolated']} interpolated, "
          f"{counts['failed']} failed, {len(h.get('pending_keys', []))} pending")
    failed = [e for e in table.entries.values() if not e.ok]
    for entry in failed[:10]:
        print(f"  FAILED     {entry.key}: {entry.error}")
    blocks = sorted((e for e in table.entries.values() if e.ok and not e.key.startswith("overhead:")),
                    key=lambda e: e.median_us, reverse=True)
    print(f"  slowest {min(args.top, len(blocks))}:")
    for entry in blocks[:args.top]:
        print(f"    {entry.median_us:10.2f} us  [{entry.p10_us:.2f}, {entry.p90_us:.2f}]  {entry.key}")
    report = h.get("validation")
    if report:
        print(f"  validation {report['samples']} held-out archs on {report['date']}: MAPE {report['mape_pct']:.2f}%, "
              f"max {report['max_error_pct']:.2f}%, Kendall tau {report['kendall_tau']:.3f} "
              f"(per-call overhead fitted: {report['fitted_overhead_us']:.2f} us)")
    else:
        print("  validation none yet (run 'onnxnas lut validate')")
    return 0


def backend_from_header(table: LatencyTable) -> tuple[TimingBackend, TimingProtocol]:
    """The backend and protocol a table was built with, so validation measures like the build did."""
    from onnxnas.timing.devices import backend_for

    h = table.header
    device = h.get("device", {})
    protocol = TimingProtocol(**h["protocol"])
    backend, _ = backend_for(device.get("name", "cpu"), h["backend"]["name"], force=bool(device.get("forced")),
                             threads=protocol.threads, precision=table.precision,
                             timing_cache=Path(table.source).with_suffix(".timing.cache"))
    return backend, protocol


def run_validate(args: argparse.Namespace) -> int:
    from onnxnas.lut.validate import apply_calibration, plot_report, validate_table

    if args.samples < 4:
        raise OnnxNasError(f"--samples must be >= 4 (half calibrates, half is held out), got {args.samples}",
                           fix="use --samples 20 or more")
    if args.rounds < 1:
        raise OnnxNasError(f"--rounds must be >= 1, got {args.rounds}")
    table = LatencyTable.load(args.table)
    space_name = args.space or table.header["space"]["name"]
    if args.space is None and space_name not in BUILTIN_SPACES:
        raise OnnxNasError(f"table is for space {space_name!r}, which is not built in", where=str(args.table),
                           fix="pass its space file with --space")
    space = load_space(space_name)
    backend, protocol = backend_from_header(table)
    with tempfile.TemporaryDirectory(prefix="onnxnas-validate-") as workdir:
        report = validate_table(table, space, backend, protocol, args.samples, Path(workdir), seed=args.seed,
                                rounds=args.rounds, progress=not args.no_progress)
    apply_calibration(table, report)
    table.save(args.table)
    m = report.metrics()
    raw = m["with_build_overhead"]
    print(f"{args.table}: {len(report.archs)} archs timed end to end")
    print(f"  with the build's overhead ({raw['overhead_us']:.2f} us/call), all archs: MAPE {raw['mape_pct']:.2f}%, "
          f"max {raw['max_error_pct']:.2f}%, tau {raw['kendall_tau']:.3f}, bias {raw['mean_bias_pct']:+.2f}%")
    print(f"  calibrated ({m['fitted_overhead_us']:.2f} us/call, fitted on half), {m['samples']} held-out archs: "
          f"MAPE {m['mape_pct']:.2f}%, max {m['max_error_pct']:.2f}%, tau {m['kendall_tau']:.3f}, "
          f"bias {m['mean_bias_pct']:+.2f}%")
    print("  calibration and report stored in the table header")
    if args.plot:
        plot_report(report, args.plot, f"{space.name} on {table.header['device']['name']} ({table.header['backend']['name']})")
        print(f"wrote {args.plot}")
    return 0
