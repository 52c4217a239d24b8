"""`onnxnas plot`: search curves and the found architecture of a search run, as PNGs."""

from __future__ import annotations

import argparse
from pathlib import Path

from onnxnas.arch import load_arch
from onnxnas.errors import OnnxNasError
from onnxnas.search.metrics import read_search_metrics


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("plot", help="draw a search run's curves and its architecture (PNG)")
    parser.add_argument("run", help="a search --out folder (or a variant folder of a sweep)")
    parser.add_argument("--out", default=None, help="folder for the PNGs (default: the run folder)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from onnxnas.plot import plot_arch, plot_search_curves
    from onnxnas.plot_filterlevel import is_filterlevel_run, plot_run
    from onnxnas.plot_udc import plot_udc_run, read_udc_metrics

    folder = Path(args.run)
    metrics_path = folder / "metrics.jsonl"
    if not metrics_path.exists():
        hint = "pick one of its variants/<name> folders" if (folder / "summary.json").is_file() else "pass a search --out folder"
        raise OnnxNasError("no metrics.jsonl here", where=str(folder), fix=hint)
    out = Path(args.out) if args.out else folder
    if is_filterlevel_run(folder):
        return _report(plot_run(folder, load_arch(folder / "arch.json"), out))
    udc = read_udc_metrics(metrics_path)
    if udc is not None:
        return _report(plot_udc_run(folder, udc, out))
    metrics = read_search_metrics(metrics_path)
    written = [plot_search_curves(metrics, out / "search_curves.png")]
    if (folder / "arch.json").exists():
        written.append(plot_arch(load_arch(folder / "arch.json"), out / "arch.png"))
    return _report(written)


def _report(written: list[Path]) -> int:
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
