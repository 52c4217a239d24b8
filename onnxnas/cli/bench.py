"""`onnxnas bench MODEL.onnx|MODEL.engine --device DEV`: end-to-end latency beside the LUT's prediction."""

from __future__ import annotations

import argparse
from pathlib import Path

from onnxnas.cli.options import add_timing_options, make_backend, timing_protocol
from onnxnas.deploy.artefacts import MANIFEST_FILE, load_onnx
from onnxnas.deploy.engine import DEFAULT_TIMING_CACHE
from onnxnas.deploy.latency import measure
from onnxnas.deploy.manifest import read_manifest
from onnxnas.errors import OnnxNasError
from onnxnas.timing.environment import warn_if_foreign


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="time a finalized model end to end with the LUT's backend and protocol",
        description="Time model.onnx or model.engine with the same backend and protocol as the latency tables, "
                    "and print the LUT prediction from manifest.json beside it when there is one.")
    parser.add_argument("model", type=Path, help="model.onnx or model.engine")
    add_timing_options(parser, precision_default=None)
    parser.set_defaults(func=run)
    parser.add_argument("--timing-cache", type=Path, default=DEFAULT_TIMING_CACHE,
                        help="TensorRT timing cache (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    model: Path = args.model
    manifest = read_manifest(model.parent) if (model.parent / MANIFEST_FILE).is_file() else None
    args.precision = args.precision or (manifest or {}).get("precision", "fp32")
    if model.suffix == ".onnx":
        load_onnx(model)  # refuses external data outside the folder before any backend reads it
    elif not model.is_file():
        raise OnnxNasError("model not found", where=str(model), fix="pass a model.onnx or model.engine")
    backend, device = make_backend(args, args.timing_cache)
    protocol = timing_protocol(args)
    try:
        result = measure(backend, model, protocol)
    finally:
        getattr(backend, "close", lambda: None)()
    print(f"{model}: median {result['median_us']:.1f} us (p10 {result['p10_us']:.1f}, p90 {result['p90_us']:.1f}, "
          f"{result['count']} runs) on {device['name']} with {result['backend']} {result['backend_version']}, "
          f"{args.precision}")
    lut = (manifest or {}).get("latency", {}).get("lut") or {}
    warn_if_foreign(lut.get("lut"))
    if lut.get("predicted_us"):
        ratio = result["median_us"] / lut["predicted_us"]
        print(f"LUT prediction {lut['predicted_us']:.1f} us ({lut['lut']}): measured / predicted = {ratio:.2f}")
        if lut.get("note"):
            print(f"note: {lut['note']}")
        if lut.get("protocol") not in (None, protocol.to_dict()):
            print(f"note: the LUT was timed with protocol {lut['protocol']}, this run with {protocol.to_dict()}")
    elif manifest is not None:
        print(f"no LUT prediction in the manifest: {lut.get('note', 'none recorded')}")
    return 0
