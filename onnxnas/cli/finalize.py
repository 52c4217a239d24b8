"""`onnxnas finalize ARCH.json`: deployable ONNX (+ TensorRT engine) + manifest, verified."""

from __future__ import annotations

import argparse
import math
import shlex
from pathlib import Path
from typing import Any

from onnxnas.arch import Arch, load_arch
from onnxnas.cli.build_lut import default_out
from onnxnas.cli.options import (SEED, add_arch_space_option, add_timing_options, bounded_int, check_precision, make_backend,
                                 timing_protocol)
from onnxnas.deploy.engine import DEFAULT_TIMING_CACHE, HARDWARE_COMPATIBILITY, EngineOptions
from onnxnas.deploy.sparsity import SPARSITY_PATTERNS
from onnxnas.errors import OnnxNasError
from onnxnas.finalize import FinalizeOptions, finalize
from onnxnas.lut.builder import Shard
from onnxnas.timing.devices import DEVICES

MAX_CALIBRATION_SAMPLES = 4096
MAX_VERIFY_SAMPLES = 1024
MAX_SAMPLE_BYTES = 1 << 30  # calibration + verification images, float32, held at once


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "finalize", help="turn an arch.json (+ weights) into verified ONNX / TensorRT artefacts and a manifest",
        description="Build the concrete network (exact widths, skipped layers removed, checkpoint sliced), export "
                    "ONNX, fold BN, prune, quantize (QDQ), verify PyTorch vs ONNX Runtime (vs TensorRT) with "
                    "Polygraphy, and write model.onnx, model.engine (where TensorRT is present) and manifest.json.")
    parser.add_argument("arch", type=Path, help="arch.json (from a search, or hand-written)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="checkpoint (onnxnas search checkpoint or plain state_dict); without it the weights are "
                             "random (NOT TRAINED)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: out/<arch name>-<precision>)")
    add_arch_space_option(parser)
    parser.add_argument("--lut", type=Path, default=None,
                        help="latency table for the predicted latency (default: the arch's provenance, else "
                             "latency_tables/<space>-<device>-<backend>-<precision>.json if present)")
    parser.add_argument("--sparsity", default=None, choices=SPARSITY_PATTERNS,
                        help="prune weights to this structured pattern and build the engine with sparse weights")
    parser.add_argument("--calib-data", default="synthetic",
                        help="INT8 calibration / verification images: digits, synthetic or an image folder "
                             "(default: %(default)s)")
    parser.add_argument("--calib-samples", type=bounded_int(1, MAX_CALIBRATION_SAMPLES), default=16, help="calibration images (default: %(default)s)")
    parser.add_argument("--verify-samples", type=bounded_int(1, MAX_VERIFY_SAMPLES), default=4, help="verification images (default: %(default)s)")
    parser.add_argument("--seed", type=SEED, default=0, help="seed of random-init weights (default: %(default)s)")
    parser.add_argument("--no-measure", action="store_true", help="skip the end-to-end latency measurement")
    engine = parser.add_argument_group("TensorRT engine")
    engine.add_argument("--engine", action=argparse.BooleanOptionalAction, default=None,
                        help="build model.engine (default: where TensorRT and a GPU are present)")
    engine.add_argument("--timing-cache", type=Path, default=DEFAULT_TIMING_CACHE,
                        help="TensorRT timing cache, read and updated (default: %(default)s)")
    engine.add_argument("--hardware-compatibility", default="none", choices=tuple(HARDWARE_COMPATIBILITY),
                        help="engine hardware compatibility level (default: %(default)s)")
    engine.add_argument("--version-compatible", action="store_true", help="engine runs on later TensorRT versions")
    engine.add_argument("--exclude-lean-runtime", action="store_true",
                        help="leave the lean runtime out of a version-compatible engine")
    engine.add_argument("--workspace-mib", type=bounded_int(1, 1 << 20), default=None, help="builder workspace limit")
    add_timing_options(parser, device_default="cpu")  # measure with the LUT protocol on ORT CPU unless told otherwise
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    precision = check_precision(args.precision)
    arch = load_arch(args.arch)
    _check_sample_memory(arch, args.calib_samples + args.verify_samples)
    backend, device = (None, None) if args.no_measure else make_backend(args, args.timing_cache)
    out = args.out or Path("out") / f"{args.arch.stem}-{precision}"
    options = FinalizeOptions(
        out=out, weights=args.weights, precision=precision, engine=args.engine,
        engine_options=EngineOptions(timing_cache=args.timing_cache, hardware_compatibility=args.hardware_compatibility,
                                     version_compatible=args.version_compatible,
                                     exclude_lean_runtime=args.exclude_lean_runtime, workspace_mib=args.workspace_mib),
        sparsity=args.sparsity, calib_data=args.calib_data, calibration_samples=args.calib_samples,
        verify_samples=args.verify_samples, space=args.space,
        lut=args.lut or _default_lut(arch, args, precision), backend=backend, device=device,
        protocol=timing_protocol(args), seed=args.seed)
    try:
        manifest = finalize(args.arch, options)
    finally:
        getattr(backend, "close", lambda: None)()
    _summary(out, manifest)
    return 0


def _check_sample_memory(arch: Arch, samples: int) -> None:
    """Calibration and verification images are held in memory at once: refuse what cannot fit."""
    need = samples * math.prod(arch.input_shape) * 4
    if need > MAX_SAMPLE_BYTES:
        raise OnnxNasError(f"--calib-samples + --verify-samples = {samples} images of {list(arch.input_shape[1:])} "
                           f"need {need / 2**30:.1f} GiB, more than the {MAX_SAMPLE_BYTES / 2**30:g} GiB allowed",
                           where="--calib-samples", fix="pass fewer samples")


def _default_lut(arch: Arch, args: argparse.Namespace, precision: str) -> Path | None:
    """The table the search used (provenance), else the one build-lut writes for this device/backend/precision."""
    recorded = arch.provenance.get("lut")
    recorded = recorded.get("path") if isinstance(recorded, dict) else recorded
    if isinstance(recorded, str) and Path(recorded).is_file():
        return Path(recorded)
    spec = DEVICES.get(args.device.lower())
    return default_out(arch.space, spec.name, args.backend or spec.default_backend, precision, Shard()) if spec else None


def _summary(out: Path, manifest: dict[str, Any]) -> None:
    size, latency = manifest["size"], manifest["latency"]
    files = [f["path"] if isinstance(f, dict) else f for f in manifest["files"].values() if f]
    print(f"wrote {out}/: {', '.join(files)}, manifest.json")
    print(f"weights: {manifest['weights']}; precision {manifest['precision']}; arch {manifest['arch']['hash']}")
    print(f"size: {size['parameters']:,} parameters in model.onnx (BN folded; {size['parameters_before_bn_folding']:,} "
          f"in PyTorch), {size['macs']:,} MACs, ONNX {size['onnx_bytes']:,} bytes "
          f"(deflate {size['deflate_bytes']:,}, entropy bound {size['entropy_bound_bytes']:,})")
    for c in manifest["verification"]["comparisons"]:
        for name, o in c["outputs"].items():
            print(f"verified {c['candidate']} vs {c['reference']} [{name}]: max abs {o['max_abs']:.3g} "
                  f"<= {o['atol']:.3g} (tolerance {manifest['verification']['tolerance']:g} x peak {o['peak']:.3g})")
    print(f"check with Polygraphy: (cd {shlex.quote(str(out))} && {manifest['verify_command']})")
    measured, lut = latency["measured"], latency["lut"]
    predicted = f"{lut['predicted_us']:.1f} us (LUT {lut['lut']})" if lut["predicted_us"] else f"n/a ({lut['note']})"
    if measured:
        print(f"latency: measured {measured['median_us']:.1f} us ({measured['backend']}), predicted {predicted}")
    else:
        print(f"latency: predicted {predicted}")
