"""PyTorch module -> ONNX, shared by the LUT builder and finalize.

One pinned opset and one exporter so that a block timed for the LUT and the same
block inside a finalized network lower to the same ONNX operators.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import onnx
import torch

from onnxnas.fileio import atomic_write_bytes

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "int8": torch.float32}


def export_bytes(
    module: torch.nn.Module,
    input_shape: tuple[int, ...],
    precision: str = "fp32",
    *,
    fold_constants: bool = True,
) -> bytes:
    """Export ``module`` (in eval mode) and return the serialized ONNX model.

    ``precision='fp16'`` exports the module in half precision, because TensorRT 11
    is strongly typed and takes precision from the graph, not from builder flags.
    ``int8`` exports fp32; INT8 comes from explicit QDQ nodes added by passes.
    With ``fold_constants=False`` BatchNormalization stays in the graph, so graph
    passes (``passes.fold_bn``) can be tested on it.
    """
    dtype = _DTYPES[precision]
    module = module.eval().to(dtype)
    example = torch.zeros(input_shape, dtype=dtype)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            buffer,
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            do_constant_folding=fold_constants,
            training=torch.onnx.TrainingMode.EVAL,
        )
    return buffer.getvalue()


def export_onnx(
    module: torch.nn.Module,
    input_shape: tuple[int, ...],
    path: str | Path,
    precision: str = "fp32",
    *,
    fold_constants: bool = True,
) -> Path:
    """Export ``module`` to ``path`` atomically; see :func:`export_bytes`."""
    return atomic_write_bytes(path, export_bytes(module, input_shape, precision, fold_constants=fold_constants))


def load_model(data_or_path: bytes | str | Path) -> onnx.ModelProto:
    if isinstance(data_or_path, bytes):
        return onnx.load_from_string(data_or_path)
    return onnx.load(str(data_or_path))
