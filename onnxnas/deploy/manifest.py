"""manifest.json: everything a deployment engineer needs to know about the artefacts beside it.

I/O signature, precision, opset, software versions, the arch hash, latency (LUT and
measured), size (parameters, bytes on disk, compressed-size estimates), the weights'
origin, and the verification report. It is the only place for metadata: the engine
plan stays exactly as TensorRT wrote it.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import math
import re
import zlib
from pathlib import Path
from typing import Any

import onnx
from torch import nn

from onnxnas import __version__
from onnxnas.compress.size import bound_bits
from onnxnas.deploy.artefacts import MANIFEST_FILE
from onnxnas.deploy.concrete import FLOAT_BITS, bits_for
from onnxnas.deploy.onnx_counts import onnx_counts
from onnxnas.fileio import atomic_write_json, file_sha256, read_json
from onnxnas.schema import Fields
from onnxnas.timing.base import PRECISIONS

MANIFEST_VERSION = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")
_PACKAGES = ("torch", "onnx", "onnxruntime", "onnx-ir", "onnxscript", "polygraphy", "tensorrt")


def software_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"onnxnas": __version__}
    for package in _PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def io_signature(model: onnx.ModelProto) -> dict[str, list[dict[str, Any]]]:
    """Graph inputs and outputs: name, static shape, NumPy dtype name."""
    def describe(value: onnx.ValueInfoProto) -> dict[str, Any]:
        tensor = value.type.tensor_type
        return {"name": value.name, "shape": [d.dim_value if d.HasField("dim_value") else d.dim_param for d in tensor.shape.dim],
                "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name}

    initializers = {i.name for i in model.graph.initializer}
    return {"inputs": [describe(v) for v in model.graph.input if v.name not in initializers],
            "outputs": [describe(v) for v in model.graph.output]}


def size_report(module: nn.Module, bits: dict[str, int], precision: str, params: int, macs: int,
                onnx_path: Path, compressed: dict[str, Any] | None = None) -> dict[str, Any]:
    """Parameters and MACs, bytes on disk, a deflate size, and the size bound of docs/design.md §7.

    ``parameters`` is what model.onnx holds (BN folded into the convs, counted from the graph
    by :func:`onnxnas.deploy.onnx_counts.onnx_counts`); ``parameters_before_bn_folding`` is the
    PyTorch count ``params`` (BN gamma/beta included), which tiny exceeds by 760 and GPUNet-1 by 29,424.

    The bound (:func:`onnxnas.compress.size.bound_bits`) is taken per conv/linear weight
    tensor at its deployed bitwidth and its real non-zero fraction; other parameters count
    at the float width. It is the size a 4-bit or sparse layer really needs, which the
    INT8-on-a-coarser-grid ONNX does not show. ``compressed`` holds the sizes of
    compressed.bin where the model has INT8 weights (:mod:`onnxnas.deploy.compressed`).
    """
    float_bits = 16 if precision == "fp16" else FLOAT_BITS
    total_bits = 0.0
    for name, tensor in module.named_parameters():
        b = bits_for(name, bits)
        if name.endswith("weight") and tensor.dim() > 1:
            nonzero = int(tensor.count_nonzero()) / tensor.numel()
            total_bits += bound_bits(tensor.numel(), b if b < FLOAT_BITS else float_bits, nonzero)
        else:
            total_bits += float_bits * tensor.numel()
    data = onnx_path.read_bytes()
    deployed = onnx_counts(onnx.load_model_from_string(data), str(onnx_path)).params
    return {"parameters": deployed, "parameters_before_bn_folding": params, "macs": macs, "onnx_bytes": len(data),
            "deflate_bytes": len(zlib.compress(data, 6)), "entropy_bound_bytes": int(math.ceil(total_bits / 8)),
            "compressed": compressed}


def file_record(path: Path) -> dict[str, Any]:
    return {"path": path.name, "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    return atomic_write_json(folder / MANIFEST_FILE, {"manifest_version": MANIFEST_VERSION,
                                                      "created": _now(), **manifest})


@dataclasses.dataclass(frozen=True)
class FileRecord:
    """One shipped file as finalize recorded it."""

    path: str
    bytes: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class LutRecord:
    """The LUT prediction of the manifest: ``predicted_us`` is None with a ``note`` saying why."""

    predicted_us: float | None
    lut: str | None
    note: str | None
    protocol: dict[str, Any] | None


@dataclasses.dataclass(frozen=True)
class Manifest:
    """The fields of manifest.json that verify and bench act on, each checked on load."""

    source: str
    precision: str
    onnx: FileRecord
    engine: FileRecord | None
    lut: LutRecord


def load_manifest(folder: Path) -> Manifest:
    """Read ``folder/manifest.json`` through the bounded JSON reader and check every field used.

    Other fields (size, passes, notes, ...) are for people and are not interpreted here.
    """
    path = folder / MANIFEST_FILE
    source = str(path)
    top = Fields(read_json(path, "manifest"), "$", source)
    version = top.get("manifest_version", None)
    if version != MANIFEST_VERSION:
        raise top.fail("manifest_version", f"unsupported manifest_version {version!r}",
                       fix=f"regenerate it with this onnxnas (version {MANIFEST_VERSION})")
    files = top.object("files")
    lut = top.object("latency").object("lut")
    return Manifest(
        source=source, precision=top.string("precision", choices=PRECISIONS),
        onnx=_file_record(files.object("onnx")),
        engine=None if files.get("engine", None) is None else _file_record(files.object("engine")),
        lut=LutRecord(predicted_us=None if lut.get("predicted_us", None) is None
                      else lut.number("predicted_us", low=0.0, low_open=True),
                      lut=_optional_string(lut, "lut"), note=_optional_string(lut, "note"),
                      protocol=None if lut.get("protocol", None) is None else lut.object("protocol").data))


def _file_record(f: Fields) -> FileRecord:
    sha256 = f.string("sha256")
    if not _SHA256.fullmatch(sha256):
        raise f.fail("sha256", f"expected 64 hex digits, got {sha256[:70]!r}")
    return FileRecord(path=f.identifier("path"), bytes=f.integer("bytes", low=0, high=2**50), sha256=sha256)


def _optional_string(f: Fields, name: str) -> str | None:
    return None if f.get(name, None) is None else f.string(name)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
