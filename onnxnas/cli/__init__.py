"""`onnxnas` command line: one module per command, each with ``register(subparsers)``.

User errors (:class:`OnnxNasError`) print one line, no traceback, and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from onnxnas import __version__
from onnxnas.errors import OnnxNasError

# Command modules under onnxnas.cli; each defines register(subparsers).
COMMAND_MODULES = ("build_lut", "lut", "arch", "search", "scale", "train", "finetune", "plot", "finalize", "verify",
                   "bench")


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line that names the fix, like every other user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"onnxnas: error: {message} -- see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="onnxnas", description="Hardware-aware NAS whose results deploy as ONNX/TensorRT.")
    parser.add_argument("--version", action="version", version=f"onnxnas {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(f"onnxnas.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # a refused flag (or --help): the same status, returned like every other outcome
        return int(exc.code or 0)
    try:
        return int(args.func(args) or 0)
    except OnnxNasError as exc:
        print(f"onnxnas: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("onnxnas: interrupted; finished work is saved, rerun the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `onnxnas lut show ... | head -1`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
