"""`onnxnas search`: space + LUT + data -> arch.json (+ weights, metrics, checkpoints)."""

from __future__ import annotations

import argparse

from onnxnas.cli.options import (MAX_BATCH, MAX_BATCHES, MAX_EPOCHS, MAX_WORKERS, SEED, add_space_option, bounded_int,
                                 finite_float)
from onnxnas.search.methods import METHODS, get_method
from onnxnas.timing.environment import warn_if_foreign


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "search", help="latency-aware architecture search",
        description="Search a space against a latency table. Runs under 'torchrun --nproc_per_node N' as-is "
                    "(data parallel; only rank 0 writes).")
    parser.add_argument("--method", default="prunet", choices=sorted(METHODS), help="search method (default: %(default)s)")
    add_space_option(parser)
    parser.add_argument("--lut", default=None, help="latency table of the space (from 'onnxnas build-lut'); "
                                                    "methods with a latency term need it")
    parser.add_argument("--data", default="digits", help="digits, synthetic, or an ImageFolder directory (default: %(default)s)")
    parser.add_argument("--out", required=True, help="output folder: arch.json, weights.pt, metrics.jsonl, checkpoints/")
    parser.add_argument("--resume", action="store_true", help="continue the search in --out from its last checkpoint")
    parser.add_argument("--target-latency-us", type=finite_float(0, 1e9, low_open=True), default=None,
                        help="hard cap on the calibrated LUT latency in microseconds (udc: an int8 table)")
    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=bounded_int(1, MAX_EPOCHS), default=20, help="total epochs, warm-up included (default: %(default)s)")
    train.add_argument("--batch-size", type=bounded_int(1, MAX_BATCH), default=64, help="per-process batch size (default: %(default)s)")
    train.add_argument("--max-batches", type=bounded_int(2, MAX_BATCHES), default=None, help="cap on batches per epoch (smoke tests)")
    train.add_argument("--lr", type=finite_float(0, 10, low_open=True), default=0.002, help="RMSprop learning rate, cosine decay (default: %(default)s)")
    train.add_argument("--weight-decay", type=finite_float(0, 1), default=1e-5, help="(default: %(default)s)")
    train.add_argument("--seed", type=SEED, default=0, help="(default: %(default)s)")
    train.add_argument("--workers", type=bounded_int(0, MAX_WORKERS), default=0, help="data-loading worker processes (default: %(default)s)")
    train.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                       help="auto: CUDA (AMP, channels-last) when present (default: %(default)s)")
    for name in sorted(METHODS):
        get_method(name).add_arguments(parser)
    parser.set_defaults(func=lambda args: warn_if_foreign(args.lut) or get_method(args.method).run(args))
