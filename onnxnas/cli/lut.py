"""`onnxnas lut merge|show|validate|check`: work with latency tables."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from onnxnas.errors import OnnxNasError
from onnxnas.lut.builder import table_backend
from onnxnas.lut.merge import check_merge_out, merge_tables
from onnxnas.lut.table import LatencyTable
from onnxnas.space import BUILTIN_SPACES, SearchSpace, load_space

MAX_VALIDATE_SAMPLES = 1000
MAX_ROUNDS = 100


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("lut", help="merge, show, validate or check latency tables")
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

    check = commands.add_parser("check", help="re-time a sample of entries here: does the table still hold?")
    check.add_argument("table", type=Path)
    check.add_argument("--samples", type=int, default=8, help="entries to re-time (default: %(default)s)")
    check.add_argument("--tolerance", type=float, default=0.10,
                       help="largest |now / table - 1| that still holds (default: %(default)s)")
    check.add_argument("--seed", type=int, default=0)
    check.add_argument("--space", default=None, help="space file, when the table's space is not built in")
    check.add_argument("--no-record", action="store_true",
                       help="leave the table as it is when it holds (default: record the pass in its header, "
                            "so commands on this host stop warning)")
    check.add_argument("--no-progress", action="store_true")
    check.set_defaults(func=run_check)


def _bounded(flag: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:  # NaN fails this too
        raise OnnxNasError(f"{flag} must be in [{low:g}, {high:g}], got {value}", fix=f"pass {flag} within that range")


def run_merge(args: argparse.Namespace) -> int:
    check_merge_out(args.out, args.shards)
    table = merge_tables(args.shards)
    table.save(args.out)
    counts = table.summary_counts()
    print(f"wrote {args.out}: {counts['entries']} entries from {len(args.shards)} shards "
          f"({counts['failed']} failed, {counts['interpolated']} interpolated)")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from onnxnas.lut.validate import tau_text
    from onnxnas.timing.environment import recorded_environment

    _bounded("--top", args.top, 0, 10**6)
    table = LatencyTable.load(args.table)
    h = table.header
    device = h["device"]
    space = h.get("space", {})
    print(f"{args.table}")
    print(f"  device     {device['name']} ({device.get('gpu') or device.get('cpu')})"
          f"{'  [FORCED: hardware did not match]' if device.get('forced') else ''}")
    print(f"  backend    {h['backend']['name']} {h['backend'].get('version')}, precision {table.precision}")
    print(f"  timed on   {recorded_environment(h).describe()}"
          f"{'' if 'environment' in h else ' (older table: CPU flags not recorded)'}")
    print(f"  space      {space.get('name')} (hash {space.get('hash')}, {space.get('resolution')}px), shard {h.get('shard', '0/1')}")
    p = table.protocol
    print(f"  protocol   batch {p.batch_size}, {p.warmup_runs} warm-up, >= {p.runs} runs, {p.statistic}, "
          f"{p.threads} thread(s); per-call overhead {table.per_call_overhead_us:.2f} us")
    print(f"  created    {h.get('created')} on {h.get('host')}")
    counts = table.summary_counts()
    print(f"  entries    {counts['entries']}: {counts['measured']} measured, {counts['interpolated']} interpolated, "
          f"{counts['failed']} failed, {len(h.get('pending_keys', []))} pending")
    failed = [e for e in table.entries.values() if not e.ok]
    for entry in failed[:10]:
        print(f"  FAILED     {entry.key}: {entry.error}")
    blocks = sorted((e for e in table.entries.values() if e.ok and not e.key.startswith("overhead:")),
                    key=lambda e: e.median_us, reverse=True)  # type: ignore[arg-type,return-value]
    print(f"  slowest {min(args.top, len(blocks))}:")
    for entry in blocks[:args.top]:
        spread = f"[{entry.p10_us:.2f}, {entry.p90_us:.2f}]" if entry.p10_us and entry.p90_us else "[no spread]"
        print(f"    {entry.median_us:10.2f} us  {spread}  {entry.key}")
    report = h.get("validation")
    if report:
        print(f"  validation {report['samples']} held-out archs on {report['date']}: MAPE {report['mape_pct']:.2f}%, "
              f"max {report['max_error_pct']:.2f}%, Kendall tau {tau_text(report.get('kendall_tau'))} "
              f"(per-call overhead fitted: {report['fitted_overhead_us']:.2f} us)")
    else:
        print("  validation none yet (run 'onnxnas lut validate')")
    return 0


def table_space(table: LatencyTable, space_file: str | None) -> SearchSpace:
    """The table's space: built in by its recorded name, or the file given with --space."""
    name = space_file or table.header.get("space", {}).get("name")
    if space_file is None and name not in BUILTIN_SPACES:
        raise OnnxNasError(f"table is for space {name!r}, which is not built in", where=table.source,
                           fix="pass its space file with --space")
    return load_space(name)


def run_validate(args: argparse.Namespace) -> int:
    from onnxnas.lut.validate import apply_calibration, plot_report, tau_text, validate_table

    if not 4 <= args.samples <= MAX_VALIDATE_SAMPLES:
        raise OnnxNasError(f"--samples must be in [4, {MAX_VALIDATE_SAMPLES}] (half calibrates, half is held out), "
                           f"got {args.samples}", fix="use --samples 20")
    _bounded("--rounds", args.rounds, 1, MAX_ROUNDS)
    if args.plot is not None and args.plot.is_dir():  # found before the timing, not after it
        raise OnnxNasError("--plot is a directory", where=str(args.plot), fix="pass a file path ending in .png")
    table = LatencyTable.load(args.table)
    space = table_space(table, args.space)
    backend = table_backend(table)
    with tempfile.TemporaryDirectory(prefix="onnxnas-validate-") as workdir:
        report = validate_table(table, space, backend, table.protocol, args.samples, Path(workdir), seed=args.seed,
                                rounds=args.rounds, progress=not args.no_progress)
    apply_calibration(table, report)
    table.save(args.table)
    m = report.metrics()
    raw = m["with_build_overhead"]
    print(f"{args.table}: {len(report.archs)} archs timed end to end")
    print(f"  with the build's overhead ({raw['overhead_us']:.2f} us/call), all archs: MAPE {raw['mape_pct']:.2f}%, "
          f"max {raw['max_error_pct']:.2f}%, tau {tau_text(raw['kendall_tau'])}, bias {raw['mean_bias_pct']:+.2f}%")
    print(f"  calibrated ({m['fitted_overhead_us']:.2f} us/call, fitted on half), {m['samples']} held-out archs: "
          f"MAPE {m['mape_pct']:.2f}%, max {m['max_error_pct']:.2f}%, tau {tau_text(m['kendall_tau'])}, "
          f"bias {m['mean_bias_pct']:+.2f}%")
    print("  calibration and report stored in the table header")
    if args.plot:
        plot_report(report, args.plot, f"{space.name} on {table.header['device']['name']} ({table.header['backend']['name']})")
        print(f"wrote {args.plot}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    """Exit 0 when every sampled entry is within --tolerance here, 1 (with the rebuild command) when not."""
    from onnxnas.lut.check import MAX_CHECK_SAMPLES, check_table, record_pass, sample_units
    from onnxnas.timing.environment import host_environment, recorded_environment

    _bounded("--samples", args.samples, 1, MAX_CHECK_SAMPLES)
    _bounded("--tolerance", args.tolerance, 1e-6, 10.0)
    table = LatencyTable.load(args.table)
    units = sample_units(table, table_space(table, args.space), args.samples, args.seed)
    backend = table_backend(table)
    recorded = recorded_environment(table.header)
    print(f"{args.table}: timed on {recorded.describe()}")
    host = host_environment(recorded.backend, recorded.threads)
    print(f"  this host: {host.describe()}")
    with tempfile.TemporaryDirectory(prefix="onnxnas-check-") as workdir:
        report = check_table(table, backend, units, Path(workdir), args.tolerance, progress=not args.no_progress)
    print(f"  re-timed {len(report.entries)} of {table.summary_counts()['measured']} measured entries "
          f"(table's protocol: {table.protocol.runs} runs, {table.protocol.threads} thread(s)):")
    for entry in report.entries:
        now = f"{entry.now_us:9.2f}" if entry.now_us is not None else f"failed here: {entry.error}"
        ratio = f"{entry.ratio:6.2f}" if entry.ratio is not None else "     -"
        print(f"    {ratio}  {entry.table_us:9.2f} -> {now} us  {entry.key}")
    drifted = report.drifted()
    median = report.median_ratio()
    summary = f"median now/table {median:.2f}" if median is not None else "no entry timed here"
    if not drifted:
        print(f"holds: all {len(report.entries)} within {args.tolerance:.0%} ({summary})")
        if not args.no_record and median is not None:
            print(f"  recorded in {record_pass(table, host, report, args.tolerance)} (header host_checks): "
                  "commands on this host no longer warn")
        return 0
    print(f"DRIFTED: {len(drifted)} of {len(report.entries)} beyond {args.tolerance:.0%} ({summary}): "
          f"{', '.join(e.key for e in drifted)}")
    print(f"  the table does not hold here; rebuild it on this machine with: {table.rebuild_command()}")
    return 1
