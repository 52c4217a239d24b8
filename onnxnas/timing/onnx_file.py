"""What every ONNX-consuming backend shares: export a job once, and the Identity probe model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from onnxnas.errors import OnnxNasError
from onnxnas.export import INPUT_NAME, OPSET, OUTPUT_NAME, export_onnx
from onnxnas.fileio import atomic_write_bytes
from onnxnas.timing.base import Measurement, TimingJob, TimingProtocol


# Backends that run TensorRT, whose int8 graphs take only INT8 zero-point-0 Q/DQ (passes.FLAVORS).
TENSORRT_BACKENDS = frozenset({"tensorrt", "trtexec"})


def int8_flavor(backend_name: str | None) -> str:
    """The int8 Q/DQ layout a backend runs as deployed: ``tensorrt`` for TensorRT backends, else ``ort``."""
    return "tensorrt" if backend_name in TENSORRT_BACKENDS else "ort"


def export_job(job: TimingJob, flavor: str = "tensorrt") -> Path:
    """Export the job's ONNX once, in the job's precision (int8 in ``flavor``); the file is the cache."""
    path = Path(job.onnx_path)
    if not path.exists():
        export_for_timing(job.build_module(), job.input_shape, path, job.precision, flavor)
    return path


def export_for_timing(module: torch.nn.Module, input_shape: tuple[int, ...], path: Path, precision: str,
                      flavor: str = "tensorrt") -> Path:
    """Write the ONNX that timing at ``precision`` measures, for a block or a whole network.

    int8 is timed as it deploys: the module goes through finalize's own pipeline (BN fold,
    INT8 weights, calibrated activation Q/DQ), since INT8 comes only from explicit
    QuantizeLinear/DequantizeLinear nodes (the only INT8 TensorRT 11 accepts) and their
    placement decides which kernels run; ``flavor`` is the backend's layout (:func:`int8_flavor`).
    """
    if precision == "int8":
        return atomic_write_bytes(path, int8_onnx(module, input_shape, flavor=flavor).SerializeToString())
    return export_onnx(module, input_shape, path, precision)


def int8_onnx(module: torch.nn.Module, input_shape: tuple[int, ...], batches: int = 4,
              flavor: str = "tensorrt") -> onnx.ModelProto:
    """``module`` at INT8 exactly as finalize deploys it, calibrated on seeded normal inputs.

    Random inputs are enough for timing: the kernels ORT and TensorRT pick depend on
    where the Q/DQ pairs sit, not on the scales' values.
    """
    from onnxnas.deploy.graph import deployable_onnx  # deploy builds on timing's neighbours; import late

    rng = np.random.default_rng(0)
    calibration = [rng.standard_normal(input_shape).astype(np.float32) for _ in range(batches)]
    proto, _ = deployable_onnx(module, input_shape, "int8", {"": 8}, calibration, flavor=flavor)
    return proto


def identity_model(input_shape: Sequence[int], precision: str) -> bytes:
    """A one-node Identity model: timing it gives the fixed cost of one inference call."""
    elem = TensorProto.FLOAT16 if precision == "fp16" else TensorProto.FLOAT
    graph = helper.make_graph([helper.make_node("Identity", [INPUT_NAME], [OUTPUT_NAME])], "overhead",
                              [helper.make_tensor_value_info(INPUT_NAME, elem, list(input_shape))],
                              [helper.make_tensor_value_info(OUTPUT_NAME, elem, list(input_shape))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # what opset 17 needs; keeps older runtimes able to load it
    onnx.checker.check_model(model)
    return model.SerializeToString()


class OnnxFileBackend:
    """Base of backends that time ONNX files: ``measure`` exports once, ``measure_onnx`` checks the file."""

    precision = "fp32"  # used by measure_onnx; measure() uses the job's precision

    def measure(self, job: TimingJob, protocol: TimingProtocol) -> Measurement:
        return self._measure(export_job(job, int8_flavor(getattr(self, "name", None))), protocol, job.precision)

    def measure_onnx(self, onnx_path: Path, protocol: TimingProtocol) -> Measurement:
        if not Path(onnx_path).is_file():
            raise OnnxNasError("ONNX model not found", where=str(onnx_path), fix="export the model first")
        return self._measure(Path(onnx_path), protocol, self.precision)

    def _measure(self, onnx_path: Path, protocol: TimingProtocol, precision: str) -> Measurement:
        raise NotImplementedError
