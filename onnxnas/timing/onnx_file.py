"""What every ONNX-consuming backend shares: export a job once, and the Identity probe model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from onnxnas.errors import OnnxNasError
from onnxnas.export import INPUT_NAME, OPSET, OUTPUT_NAME, export_onnx
from onnxnas.timing.base import Measurement, TimingJob, TimingProtocol


def export_job(job: TimingJob) -> Path:
    """Export the job's ONNX once, in the job's precision; the file is the cache.

    int8 must come from explicit QuantizeLinear/DequantizeLinear nodes (the only INT8
    TensorRT 11 accepts); without them every backend would time fp16/fp32 kernels
    under an int8 label, so that is refused.
    """
    path = Path(job.onnx_path)
    if not path.exists():
        export_onnx(job.build_module(), job.input_shape, path, job.precision)
    if job.precision == "int8":
        ops = {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}
        if "QuantizeLinear" not in ops:
            raise OnnxNasError("int8 timing needs explicit Q/DQ nodes and the exported block has none",
                               where=str(path), fix="quantize the block (QDQ) before timing, or time fp16")
    return path


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
        return self._measure(export_job(job), protocol, job.precision)

    def measure_onnx(self, onnx_path: Path, protocol: TimingProtocol) -> Measurement:
        if not Path(onnx_path).is_file():
            raise OnnxNasError("ONNX model not found", where=str(onnx_path), fix="export the model first")
        return self._measure(Path(onnx_path), protocol, self.precision)

    def _measure(self, onnx_path: Path, protocol: TimingProtocol, precision: str) -> Measurement:
        raise NotImplementedError
