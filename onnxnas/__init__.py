"""onnxnas: hardware-aware NAS whose results deploy as ONNX / TensorRT artefacts."""

__version__ = "0.1.0"
