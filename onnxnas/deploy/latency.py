"""Latency of a finalized model: the LUT's prediction and an end-to-end measurement, side by side.

Both use the LUT's own conventions (its backend, protocol and precision), so the two
numbers differ only by what block sums miss: fusion across blocks and fixed overheads.
A missing table or key is recorded as a note, never as a latency of 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onnxnas.arch import Arch
from onnxnas.errors import OnnxNasError
from onnxnas.lut.key import arch_units
from onnxnas.lut.table import LatencyTable
from onnxnas.timing.base import TimingBackend, TimingProtocol


def lut_prediction(arch: Arch, lut: Path | None, precision: str) -> dict[str, Any]:
    """``{"predicted_us", "lut", ...}``; ``predicted_us`` is None with a ``note`` saying why.

    A table of another precision still predicts (for its own precision), with a note.
    """
    if lut is None or not lut.is_file():
        return {"predicted_us": None, "lut": str(lut) if lut else None,
                "note": "no latency table" + (f" at {lut}" if lut else "") + "; pass --lut or build one with 'onnxnas build-lut'"}
    table = LatencyTable.load(lut)
    header = table.header
    record = {"lut": str(lut), "device": header.get("device", {}).get("name"),
              "backend": header.get("backend", {}).get("name"), "precision": table.precision,
              "protocol": header.get("protocol")}
    if table.precision != precision:
        record["note"] = f"the table is {table.precision}, the model {precision}: the prediction is for {table.precision}"
    table.fill_widths(u.key for u in arch_units(arch, table.precision, table.batch_size))
    try:
        return {"predicted_us": round(table.arch_latency(arch), 2), **record}
    except OnnxNasError as exc:
        return {"predicted_us": None, **record, "note": str(exc)}


def measure(backend: TimingBackend, artefact: Path, protocol: TimingProtocol) -> dict[str, Any]:
    """Time ``model.onnx`` (any backend) or ``model.engine`` (tensorrt) end to end."""
    if artefact.suffix in (".engine", ".plan"):
        if not hasattr(backend, "measure_engine"):
            raise OnnxNasError(f"backend {backend.name!r} cannot time a TensorRT engine", where=str(artefact),
                               fix="use --backend tensorrt, or bench the model.onnx")
        result = backend.measure_engine(artefact, protocol)
    else:
        result = backend.measure_onnx(artefact, protocol)
    return {**result.to_dict(), "backend": backend.name, "backend_version": backend.version(),
            "protocol": protocol.to_dict(), "artefact": artefact.name}
