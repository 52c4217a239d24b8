"""Run a shipped artefact: ``model.onnx`` with ONNX Runtime, or ``model.engine`` with TensorRT.

The small API for deployment engineers, built on Polygraphy runners (context managers)::

    from onnxnas.deploy import load_model

    with load_model("out/model.onnx") as model:    # or "out/model.engine" (needs TensorRT + GPU)
        logits = model.run(image)                   # image: numpy array of shape model.input_shape

Inputs are cast to the model's input dtype (an fp16 model accepts float32 arrays).
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from onnxnas.deploy.artefacts import load_onnx
from onnxnas.errors import OnnxNasError

ONNX_PROVIDERS = ("cpu", "cuda", "tensorrt")


def open_runner(path: str | Path, *, provider: str = "cpu", name: str | None = None) -> Any:
    """A Polygraphy runner for an ``.onnx`` (ONNX Runtime, given provider) or ``.engine`` (TensorRT) file."""
    path = Path(path)
    if path.suffix == ".onnx":
        from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

        if provider not in ONNX_PROVIDERS:
            raise OnnxNasError(f"unknown ONNX Runtime provider {provider!r}", fix=f"use one of: {', '.join(ONNX_PROVIDERS)}")
        load_onnx(path)  # refuses external data outside the folder before ONNX Runtime reads any
        return OnnxrtRunner(SessionFromOnnx(str(path), providers=[provider]), name=name or "onnxruntime")
    if path.suffix in (".engine", ".plan"):
        if not path.is_file():
            raise OnnxNasError("engine not found", where=str(path), fix="check the path")
        from onnxnas.timing.tensorrt import import_tensorrt

        import_tensorrt()
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        return TrtRunner(EngineFromBytes(BytesFromPath(str(path))), name=name or "tensorrt")
    raise OnnxNasError(f"unknown model file type {path.suffix!r}", where=str(path),
                       fix="pass a .onnx file or a TensorRT .engine/.plan file")


class DeployedModel:
    """One loaded artefact with one input; use as a context manager, then :meth:`run`."""

    def __init__(self, runner: Any):
        self.runner = runner

    def __enter__(self) -> "DeployedModel":
        from polygraphy.logger import G_LOGGER

        try:
            with G_LOGGER.verbosity(G_LOGGER.ERROR):
                self.runner.activate()
        except Exception as exc:  # ONNX Runtime's and Polygraphy's errors share no narrower base
            detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise OnnxNasError(f"{self.runner.name} cannot load the model: {detail}") from exc
        (self.input_name, (dtype, shape)), *rest = self.runner.get_input_metadata(use_numpy_dtypes=False).items()
        if rest:
            raise OnnxNasError("the model has more than one input; use model.runner.infer(feed_dict)")
        self.input_dtype = np.dtype(dtype.numpy())
        self.input_shape = tuple(shape)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.runner.deactivate()

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run one input; returns a copy of the (first) output."""
        if tuple(x.shape) != self.input_shape:
            raise OnnxNasError(f"input has shape {tuple(x.shape)}, the model takes {self.input_shape}")
        outputs = self.runner.infer({self.input_name: np.ascontiguousarray(x, dtype=self.input_dtype)})
        return np.array(next(iter(outputs.values())))


def load_model(path: str | Path, *, provider: str = "cpu") -> DeployedModel:
    """Open ``model.onnx`` or ``model.engine`` for inference (see the module docstring)."""
    return DeployedModel(open_runner(path, provider=provider))
