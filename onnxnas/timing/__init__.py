"""Timing backends (ONNX Runtime, TensorRT, trtexec, torch-cuda) and the device registry."""

from onnxnas.timing.base import PRECISIONS, Measurement, TimingBackend, TimingJob, TimingProtocol
from onnxnas.timing.devices import BACKENDS, DEVICES, DeviceSpec, detect_hardware, get_backend, resolve_device
from onnxnas.timing.onnx_file import export_job, identity_model
from onnxnas.timing.onnxruntime import OnnxRuntimeBackend
from onnxnas.timing.tensorrt import TensorRTBackend
from onnxnas.timing.torch_cuda import TorchCudaBackend
from onnxnas.timing.trtexec import TrtexecBackend, parse_trtexec_report

__all__ = [
    "BACKENDS", "DEVICES", "PRECISIONS", "DeviceSpec", "Measurement", "OnnxRuntimeBackend", "TensorRTBackend",
    "TimingBackend", "TimingJob", "TimingProtocol", "TorchCudaBackend", "TrtexecBackend", "detect_hardware",
    "export_job", "get_backend", "identity_model", "parse_trtexec_report", "resolve_device",
]
