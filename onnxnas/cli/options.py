"""Argument groups shared by several commands, their parsing into domain objects, and the
``type=`` checkers that every numeric flag goes through.

A numeric flag is checked where argparse reads it, so ``--lr inf``, ``--alpha nan`` or
``--seed 10**23`` stop at parse time with one line naming the flag (exit 2), before any file
is read or any tensor allocated.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onnxnas.arch import check_fits_space
from onnxnas.errors import choice_error
from onnxnas.space import BUILTIN_SPACES, SearchSpace, load_space
from onnxnas.timing.base import MAX_RUNS, PRECISIONS, TimingBackend, TimingProtocol

MAX_SEED = 2**32 - 1  # numpy's and most RNGs' seed range; torch takes it too
MAX_BATCH = 65_536
MAX_EPOCHS = 100_000
MAX_BATCHES = 10_000_000
MAX_WORKERS = 64


def _show(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type=``: a decimal integer in [low, high] (the bound is checked before any use)."""
    def parse(text: str) -> int:
        stripped = text.strip()
        if len(stripped) > 40 or not stripped.lstrip("+-").isdigit():
            raise argparse.ArgumentTypeError(f"expected an integer in [{low}, {high}], got {_show(text)!r}")
        value = int(stripped)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer in [{low}, {high}], got {_show(text)}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its message
    return parse


def finite_float(low: float, high: float, *, low_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type=``: a finite number in [low, high] ((low, high] with ``low_open``); NaN/inf refused."""
    bounds = f"{'(' if low_open else '['}{low:g}, {high:g}]"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in {bounds}, got {_show(text)!r}") from None
        if not math.isfinite(value) or value > high or value < low or (low_open and value == low):
            raise argparse.ArgumentTypeError(f"expected a finite number in {bounds}, got {_show(text)}")
        return value

    parse.__name__ = "number"
    return parse


def float_list(low: float, high: float, *, low_open: bool = False) -> Callable[[str], list[float]]:
    """An argparse ``type=``: one number or a comma list (a sweep), each checked like :func:`finite_float`."""
    one = finite_float(low, high, low_open=low_open)

    def parse(text: str) -> list[float]:
        values = [one(part) for part in text.split(",") if part.strip()]
        if not values or len(values) > 64:
            raise argparse.ArgumentTypeError(f"expected 1 to 64 comma-separated numbers, got {_show(text)!r}")
        return values

    parse.__name__ = "number list"
    return parse


def usable_cpus() -> int:
    """Cores this process may run on (its affinity), the ceiling for thread-count flags."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


SEED = bounded_int(0, MAX_SEED)


def add_arch_space_option(parser: argparse.ArgumentParser) -> None:
    """``--space`` for commands that take an arch: the space it must fit, by default its own built-in one."""
    parser.add_argument("--space", default=None,
                        help="space (built-in name or file) the arch must fit (default: the arch's own)")


def known_space(arch: Any, given: str | None, source: str) -> SearchSpace | None:
    """The space ``arch`` must fit (``--space``, else its own built-in one), checked; None when neither
    is known (an arch of a space file, given without the file)."""
    if not given and arch.space not in BUILTIN_SPACES:
        return None
    space = load_space(given or arch.space)
    check_fits_space(arch, space, source)
    return space


def add_space_option(parser: argparse.ArgumentParser, default: str = "tiny") -> None:
    parser.add_argument("--space", default=default,
                        help="built-in space (gpunet1, mbv2, tiny) or a JSON/YAML space file (default: %(default)s)")


def add_timing_options(parser: argparse.ArgumentParser, *, device_default: str | None = None,
                       precision_default: str | None = "fp32") -> None:
    """Device, backend, precision and protocol flags; ``device_default=None`` makes --device required."""
    group = parser.add_argument_group("timing")
    device_help = "target device: v100, a100, h100, h200, t4, l4, a10, orin, cpu"
    group.add_argument("--device", required=device_default is None, default=device_default,
                       help=device_help + (" (default: %(default)s)" if device_default else ""))
    group.add_argument("--force-device", action="store_true",
                       help="time on this machine even if it does not match --device (recorded in the header)")
    group.add_argument("--backend", default=None, help="onnxruntime, tensorrt, trtexec or torch-cuda (default: the device's)")
    group.add_argument("--precision", default=precision_default,
                       help="fp32, fp16 or int8 (default: " + (precision_default or "the manifest's, else fp32") + ")")
    group.add_argument("--threads", type=bounded_int(1, usable_cpus()), default=1,
                       help=f"CPU threads for onnxruntime, 1 to this machine's {usable_cpus()} (default: %(default)s)")
    group.add_argument("--warmup", type=bounded_int(0, MAX_RUNS), default=20,
                       help="warm-up runs per block (default: %(default)s)")
    group.add_argument("--min-runs", "--runs", dest="runs", type=bounded_int(1, MAX_RUNS), default=200,
                       help="timed runs per block, at least: timing goes on until 0.05 s of samples are kept (in "
                            "batches of 8 under the CPU canary gate), so a fast block runs more often than this; "
                            "--runs is the old name (default: %(default)s)")


def timing_protocol(args: argparse.Namespace) -> TimingProtocol:
    """The protocol of the parsed flags (their ranges were checked by argparse)."""
    return TimingProtocol(warmup_runs=args.warmup, runs=args.runs, threads=args.threads)


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise choice_error("precision", precision, PRECISIONS, where="--precision")
    return precision


def make_backend(args: argparse.Namespace, timing_cache: Path) -> tuple[TimingBackend, dict[str, Any]]:
    """Resolve --device/--force-device/--backend into a backend and the header's device record."""
    from onnxnas.timing.devices import backend_for

    return backend_for(args.device, args.backend, force=args.force_device, threads=args.threads,
                       precision=check_precision(args.precision), timing_cache=timing_cache)
