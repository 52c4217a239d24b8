"""arch.json (+ checkpoint) -> model.onnx (+ model.engine) + manifest.json, verified (docs/design.md §8).

Orchestration only; each step lives in :mod:`onnxnas.deploy`. Everything is written
into a staging folder and moved into ``out`` only once verification has passed.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onnxnas.arch import Arch, check_fits_space, load_arch
from onnxnas.deploy.artefacts import (COMPRESSED_FILE, ENGINE_FILE, INPUTS_FILE, ONNX_FILE, OUTPUTS_FILE, load_onnx,
                                      staging)
from onnxnas.deploy.checkpoint import Checkpoint, load_checkpoint
from onnxnas.deploy.compressed import compress_weights
from onnxnas.deploy.concrete import ConcreteModel, build_concrete, layer_weight_bits, quantized_reference
from onnxnas.deploy.engine import EngineOptions, build_engine, tensorrt_available
from onnxnas.deploy.graph import deployable_onnx
from onnxnas.deploy.grids import weight_grids
from onnxnas.deploy.inputs import SampleInputs, sample_inputs
from onnxnas.deploy.latency import lut_prediction, measure
from onnxnas.deploy.manifest import file_record, io_signature, size_report, software_versions, write_manifest
from onnxnas.deploy.verify import polygraphy_command, verify_artefacts
from onnxnas.errors import OnnxNasError
from onnxnas.export import OPSET
from onnxnas.fileio import atomic_write_bytes
from onnxnas.search.filterlevel.reference import verify_fake_quantized
from onnxnas.search.filterlevel.report import bops_report
from onnxnas.space import load_space
from onnxnas.stats import count_stats
from onnxnas.timing.base import TimingBackend, TimingProtocol
from onnxnas.timing.environment import warn_if_foreign
from onnxnas.timing.onnx_file import int8_flavor


@dataclasses.dataclass(frozen=True)
class FinalizeOptions:
    """What ``onnxnas finalize`` was asked for. ``engine=None`` builds one where TensorRT is present."""

    out: Path
    weights: Path | None = None
    precision: str = "fp32"
    engine: bool | None = None
    engine_options: EngineOptions = EngineOptions()
    sparsity: str | None = None
    calib_data: str = "synthetic"
    calibration_samples: int = 16
    verify_samples: int = 4
    space: str | None = None
    lut: Path | None = None
    backend: TimingBackend | None = None  # None: no latency measurement
    device: dict[str, Any] | None = None
    protocol: TimingProtocol = TimingProtocol()
    seed: int = 0


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def finalize(arch_path: Path, options: FinalizeOptions, log: Callable[[str], None] = _stderr) -> dict[str, Any]:
    """Build, verify and write the artefacts; returns the manifest. Raises OnnxNasError on any failure."""
    if options.engine and not tensorrt_available():
        raise OnnxNasError("--engine needs TensorRT and a CUDA device, and this machine lacks one",
                           fix="pip install onnxnas[tensorrt] on a GPU machine, or drop --engine")
    arch = load_arch(arch_path)
    space = load_space(options.space or arch.space)
    check_fits_space(arch, space, str(arch_path))
    checkpoint = load_checkpoint(options.weights) if options.weights else None
    samples = sample_inputs(options.calib_data, arch, options.calibration_samples, options.verify_samples)
    concrete = build_concrete(arch, checkpoint, sparsity=options.sparsity, seed=options.seed, bn_batches=samples.calibration)
    notes = _notes(arch, space.hash, checkpoint, concrete, samples, options)
    for note in notes:
        log(f"WARNING: {note}")
    bits = layer_weight_bits(arch, options.precision)
    grids = weight_grids(checkpoint.quantizers, concrete.module, checkpoint.source) if checkpoint else None
    stats = count_stats(concrete.module, arch.input_shape)
    want_engine = tensorrt_available() if options.engine is None else options.engine
    # int8 Q/DQ layout: TensorRT's rules when an engine is built or TensorRT times it, else ORT CPU's
    flavor = "tensorrt" if want_engine else int8_flavor(getattr(options.backend, "name", None))
    proto, pass_report = deployable_onnx(concrete.module, arch.input_shape, options.precision, bits,
                                         samples.calibration if options.precision == "int8" else None, grids, flavor)
    warn_if_foreign(options.lut)
    with staging(options.out) as stage:
        onnx_path = atomic_write_bytes(stage / ONNX_FILE, proto.SerializeToString())
        load_onnx(onnx_path)
        compressed = compress_weights(proto, arch, options.precision)  # the INT8 weights' real coded size (docs/design.md §7)
        if compressed:
            atomic_write_bytes(stage / COMPRESSED_FILE, compressed.data)
        engine = (build_engine(onnx_path, stage / ENGINE_FILE, options.precision,
                               dataclasses.replace(options.engine_options, sparse_weights=options.sparsity == "2:4"))
                  if want_engine else None)
        report = verify_artefacts(quantized_reference(concrete.module, bits, grids), stage, samples.verification,
                                  options.precision, with_engine=engine is not None)
        agreement = verify_fake_quantized(arch, concrete.module, bits, grids, samples.calibration, stage,
                                          options.precision, options.calib_data)
        timed = stage / ENGINE_FILE if engine and hasattr(options.backend, "measure_engine") else onnx_path
        manifest = {
            "arch": {"path": str(arch_path), "hash": arch.hash, "space": arch.space, "spec": arch.to_dict()},
            "weights": concrete.weights,
            "precision": options.precision,
            "int8_flavor": flavor if options.precision == "int8" else None,
            "opset": OPSET,
            **io_signature(proto),
            "files": {"onnx": file_record(onnx_path), "engine": file_record(stage / ENGINE_FILE) if engine else None,
                      "compressed": file_record(stage / COMPRESSED_FILE) if compressed else None,
                      "reference_inputs": INPUTS_FILE, "reference_outputs": OUTPUTS_FILE},
            "size": size_report(concrete.module, bits, options.precision, stats.params, stats.macs, onnx_path,
                                compressed.to_dict() if compressed else None),
            "latency": {"lut": lut_prediction(arch, options.lut, options.precision),
                        "measured": measure(options.backend, timed, options.protocol) if options.backend else None,
                        "device": options.device},
            "passes": pass_report,
            "compression": {"weight_bits": {k: b for k, b in bits.items() if b < 32}, "sparsity": concrete.sparsity,
                            "bops": bops_report(arch)},
            "engine": engine or {"built": False, "reason": "not requested" if options.engine is False
                                 else "TensorRT or a CUDA device is not present"},
            "verification": {**report.to_dict(), "top1_agreement": agreement.to_dict() if agreement else None},
            "verify_command": polygraphy_command(report),  # run in this folder; passes as written
            "calibration": {"data": samples.source, "samples": len(samples.calibration)},
            "software": software_versions(),
            "notes": notes,
        }
        write_manifest(stage, manifest)
    return manifest


def _notes(arch: Arch, space_hash: str, checkpoint: Checkpoint | None, concrete: ConcreteModel,
           samples: SampleInputs, options: FinalizeOptions) -> list[str]:
    """The things a deployment engineer must not miss, printed loudly and kept in the manifest."""
    notes = []
    if arch.space_hash and arch.space_hash != space_hash:
        notes.append(f"the arch was made for another version of space {arch.space!r} (hash {arch.space_hash}, now "
                     f"{space_hash}); it still fits")
    if checkpoint is None:
        recorded = arch.provenance.get("checkpoint")
        hint = f" (the arch names {recorded!r}, relative to its folder)" if recorded else ""
        notes.append("weights are freshly initialized (random init, NOT TRAINED; BN statistics from "
                     f"{samples.source} data): use these artefacts for latency and integration only; "
                     f"pass --weights CKPT{hint}")
    elif checkpoint.arch_hash not in (None, arch.hash):
        notes.append(f"the checkpoint was saved for arch {checkpoint.arch_hash}, this arch is {arch.hash}; "
                     "its tensors fit, so it was loaded")
    if options.precision == "int8" and samples.synthetic:
        notes.append("INT8 activation ranges were calibrated on synthetic data: pass --calib-data DIR (real images) "
                     "for a usable INT8 model")
    structured = concrete.sparsity.get("structured")
    if structured:
        notes.append(f"pruned {structured['tensors']} weight tensors to the 2:4 pattern ({structured['zero_fraction']:.0%} "
                     "zeros) without fine-tuning: accuracy drops unless the checkpoint was trained with that mask")
    narrow = sorted({layer.weight_bits for layer in arch.layers if layer.type != "skip" and layer.weight_bits < 8})
    if narrow:
        notes.append(f"{'/'.join(map(str, narrow))}-bit weights are stored as INT8 on the coarser grid (TensorRT has "
                     "no INT4/1-bit conv); size.entropy_bound_bytes gives their true size")
    return notes
