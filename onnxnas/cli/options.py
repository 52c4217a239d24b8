"""Argument groups shared by several commands, and their parsing into domain objects."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from onnxnas.errors import OnnxNasError, choice_error
from onnxnas.timing.base import PRECISIONS, TimingBackend, TimingProtocol


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
    group.add_argument("--threads", type=int, default=1, help="CPU threads for onnxruntime (default: %(default)s)")
    group.add_argument("--warmup", type=int, default=20, help="warm-up runs per block (default: %(default)s)")
    group.add_argument("--runs", type=int, default=200, help="timed runs per block (default: %(default)s)")


def timing_protocol(args: argparse.Namespace) -> TimingProtocol:
    for flag, value in (("--threads", args.threads), ("--runs", args.runs)):
        if value < 1:
            raise OnnxNasError(f"{flag} must be >= 1, got {value}", fix=f"pass {flag} 1 or more")
    if args.warmup < 0:
        raise OnnxNasError(f"--warmup must be >= 0, got {args.warmup}")
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
