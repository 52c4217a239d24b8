"""TensorRT Python-API backend: build an engine per block, time it like trtexec.

Precision follows the TensorRT generation. The ONNX always carries the job's
precision (an fp16 block is exported in half precision). TensorRT 11 is strongly
typed and takes precision from that graph only; up to TensorRT 10 the builder also
needs the FP16 / INT8 flags (the paper's ``--fp16``). One timing cache is shared
by every build of a LUT and saved by :meth:`TensorRTBackend.close`.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import torch

from onnxnas.errors import OnnxNasError
from onnxnas.fileio import atomic_write_bytes
from onnxnas.timing.base import PRECISIONS, Measurement, TimingProtocol
from onnxnas.timing.onnx_file import OnnxFileBackend
from onnxnas.timing.torch_cuda import require_cuda, time_cuda

INSTALL_FIX = "pip install onnxnas[tensorrt]"
_TORCH_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT8": torch.int8,
                 "INT32": torch.int32, "INT64": torch.int64, "BOOL": torch.bool, "UINT8": torch.uint8}


def import_tensorrt() -> ModuleType:
    """Import ``tensorrt`` on first use, so onnxnas imports and runs without it."""
    try:
        import tensorrt
    except ImportError as exc:
        raise OnnxNasError("the TensorRT Python package is not installed", fix=INSTALL_FIX) from exc
    return tensorrt


def major_version(version: str) -> int:
    return int(version.split(".")[0])


def precision_flags(precision: str, major: int) -> tuple[str, ...]:
    """Builder flag names a weakly typed (TensorRT <= 10) build needs; none for TensorRT 11+."""
    if precision not in PRECISIONS:
        raise OnnxNasError(f"unknown precision {precision!r}", fix=f"use one of: {', '.join(PRECISIONS)}")
    if major >= 11 or precision == "fp32":
        return ()
    return ("FP16",) if precision == "fp16" else ("FP16", "INT8")  # int8 keeps fp16 for unquantized layers


class TensorRTBackend(OnnxFileBackend):
    """Builds one engine per ONNX file and times its GPU compute with CUDA events.

    Use as a context manager (or call :meth:`close`) so the shared timing cache is saved.
    """

    name = "tensorrt"

    def __init__(
        self,
        timing_cache: Path | None = None,
        *,
        precision: str = "fp32",
        device: int = 0,
        workspace_mib: int | None = None,
        cuda_graph: bool = True,
    ):
        self._trt = import_tensorrt()
        require_cuda("the tensorrt backend")
        precision_flags(precision, 11)  # validates the name
        self.precision = precision
        self.timing_cache = Path(timing_cache) if timing_cache is not None else None
        self.device = torch.device("cuda", device)
        self.workspace_mib = workspace_mib
        self.cuda_graph = cuda_graph
        self.major = major_version(self._trt.__version__)
        self._logger = _error_logger(self._trt)
        with torch.cuda.device(self.device):
            self._builder = self._trt.Builder(self._logger)
            self._runtime = self._trt.Runtime(self._logger)
            self._cache = self._load_cache()
        self._closed = False

    def version(self) -> str:
        return str(self._trt.__version__)

    def measure_engine(self, engine_path: Path, protocol: TimingProtocol) -> Measurement:
        """Time a serialized plan as shipped (finalize's model.engine), without rebuilding it."""
        if not Path(engine_path).is_file():
            raise OnnxNasError("TensorRT engine not found", where=str(engine_path), fix="build it with onnxnas finalize --engine")
        with torch.cuda.device(self.device):
            engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
            if engine is None:
                raise OnnxNasError(f"TensorRT cannot load the plan: {self._logger.summary()}", where=str(engine_path),
                                   fix="rebuild the engine with this TensorRT version and GPU")
            return self._time(engine, protocol, str(engine_path))

    def close(self) -> None:
        """Save the timing cache (it holds every tactic timed during this build)."""
        if self._closed:
            return
        self._closed = True
        if self.timing_cache is not None:
            atomic_write_bytes(self.timing_cache, bytes(memoryview(self._cache.serialize())))

    def __enter__(self) -> "TensorRTBackend":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _load_cache(self) -> Any:
        data = self.timing_cache.read_bytes() if self.timing_cache is not None and self.timing_cache.exists() else b""
        return self._builder.create_builder_config().create_timing_cache(data)

    def _measure(self, onnx_path: Path, protocol: TimingProtocol, precision: str) -> Measurement:
        with torch.cuda.device(self.device):
            engine = self._build(onnx_path, precision)
            return self._time(engine, protocol, str(onnx_path))

    def _build(self, onnx_path: Path, precision: str) -> Any:
        trt = self._trt
        self._logger.errors.clear()
        network = self._builder.create_network(self._network_flags())
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise OnnxNasError(f"TensorRT {trt.__version__} cannot parse the model: {errors or 'no detail'}",
                               where=str(onnx_path))
        config = self._builder.create_builder_config()
        config.set_timing_cache(self._cache, ignore_mismatch=False)
        for flag in precision_flags(precision, self.major):
            config.set_flag(getattr(trt.BuilderFlag, flag))
        if self.workspace_mib is not None:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_mib << 20)
        plan = self._builder.build_serialized_network(network, config)
        engine = self._runtime.deserialize_cuda_engine(plan) if plan is not None else None
        if engine is None:
            raise OnnxNasError(f"TensorRT {trt.__version__} could not build an engine: "
                               f"{self._logger.summary()}", where=str(onnx_path))
        return engine

    def _network_flags(self) -> int:
        kinds = self._trt.NetworkDefinitionCreationFlag
        if self.major < 10:  # explicit batch is implied from TensorRT 10 on
            return 1 << int(kinds.EXPLICIT_BATCH)
        if self.major >= 11 and hasattr(kinds, "STRONGLY_TYPED"):  # always on in 11; stated for clarity
            return 1 << int(kinds.STRONGLY_TYPED)
        return 0

    def _time(self, engine: Any, protocol: TimingProtocol, where: str) -> Measurement:
        trt = self._trt
        context = engine.create_execution_context()
        if context is None:
            raise OnnxNasError(f"TensorRT could not create an execution context: {self._logger.summary()}",
                               where=where)
        buffers = []  # keeps the I/O tensors alive while the context points at them
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            shape = tuple(engine.get_tensor_shape(name))
            if any(dim < 0 for dim in shape):
                raise OnnxNasError(f"tensor {name!r} has a dynamic shape {shape}", where=where,
                                   fix="export with a static input shape (batch included)")
            trt_dtype = engine.get_tensor_dtype(name)
            dtype = _TORCH_DTYPES.get(trt_dtype.name)
            if dtype is None:
                raise OnnxNasError(f"tensor {name!r} has type {trt_dtype.name}, which onnxnas cannot allocate",
                                   where=where)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            tensor = (torch.randn(shape, dtype=dtype, device=self.device) if is_input and dtype.is_floating_point
                      else torch.zeros(shape, dtype=dtype, device=self.device))
            context.set_tensor_address(name, tensor.data_ptr())
            buffers.append(tensor)

        def enqueue() -> None:
            if not context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
                raise OnnxNasError(f"TensorRT execution failed: {self._logger.summary()}", where=where)

        stream = torch.cuda.Stream(self.device)
        launch = self._graph_launch(enqueue, stream) if self.cuda_graph else enqueue
        return time_cuda(launch, protocol, stream)

    def _graph_launch(self, enqueue: Any, stream: torch.cuda.Stream) -> Any:
        """Capture one enqueue into a CUDA graph (as trtexec --useCudaGraph); fall back if not capturable."""
        with torch.cuda.stream(stream):
            enqueue()  # TensorRT applies deferred setup on the first enqueue, which must not be captured
        stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                enqueue()
        except Exception:  # e.g. data-dependent shapes or loops; trtexec falls back the same way
            return enqueue
        return graph.replay


def _error_logger(trt: ModuleType) -> Any:
    """A TensorRT logger that keeps the last errors, to put them in exception messages."""

    class ErrorLogger(trt.ILogger):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.INTERNAL_ERROR, trt.ILogger.ERROR):
                self.errors = [*self.errors[-9:], msg]

        def summary(self) -> str:
            return " | ".join(self.errors) or "no error was logged"

    return ErrorLogger()
