"""`onnxnas verify DIR`: rerun the equivalence checks on shipped artefacts."""

from __future__ import annotations

import argparse
from pathlib import Path

from onnxnas.deploy.runtime import ONNX_PROVIDERS
from onnxnas.deploy.shipped import verify_folder


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "verify", help="recheck a finalized folder: file hashes, ONNX Runtime and TensorRT against the saved outputs",
        description="Check model.onnx / model.engine against manifest.json (hashes, external data, ONNX checker) and "
                    "compare their outputs on the saved inputs with the saved PyTorch outputs, with the "
                    "manifest's precision tolerance. Exits 2 naming the first diverging output.")
    parser.add_argument("folder", type=Path, help="folder written by 'onnxnas finalize'")
    parser.add_argument("--provider", default="cpu", choices=ONNX_PROVIDERS,
                        help="ONNX Runtime execution provider (default: %(default)s)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report, notes = verify_folder(args.folder, args.provider)
    for note in notes:
        print(f"note: {note}")
    for c in report.comparisons:
        for name, o in c.outputs.items():
            print(f"{c.candidate} vs {c.reference} [{name}]: max abs {o.max_abs:.3g} (limit {o.atol:.3g}) "
                  f"{'ok' if o.passed else 'FAILED'}")
    report.raise_on_failure()
    print(f"verified {args.folder}: {len(report.comparisons)} comparison(s) on {report.inputs} input(s), "
          f"{report.precision} tolerance {report.tolerance:g}")
    return 0
