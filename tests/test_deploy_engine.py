"""TensorRT engines: built with a timing cache and compatibility options, verified, loadable. GPU only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from onnxnas.cli import main
from onnxnas.deploy import load_model
from onnxnas.deploy.engine import EngineOptions
from onnxnas.errors import OnnxNasError
from onnxnas.timing.devices import DEVICES, detect_hardware

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tiny.arch.json"


def test_engine_options_are_validated() -> None:
    with pytest.raises(OnnxNasError, match="unknown hardware compatibility level 'turing'"):
        EngineOptions(hardware_compatibility="turing")
    with pytest.raises(OnnxNasError, match="--exclude-lean-runtime needs --version-compatible"):
        EngineOptions(exclude_lean_runtime=True)


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision, extra", [("fp16", []), ("int8", ["--sparsity", "2:4"]),
                                              ("fp32", ["--hardware-compatibility", "ampere+", "--version-compatible"])])
def test_engine_is_built_verified_and_loadable(precision: str, extra: list[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    cache = tmp_path / "timing.cache"
    assert main(["finalize", str(EXAMPLE), "--out", str(out), "--precision", precision, "--engine", "--device", "cpu",
                 "--runs", "10", "--timing-cache", str(cache), *extra]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["engine"]["tensorrt"] and manifest["files"]["engine"]["path"] == "model.engine"
    assert manifest["engine"]["sparse_weights"] == ("--sparsity" in extra)
    assert cache.stat().st_size > 0
    pairs = [(c["reference"], c["candidate"]) for c in manifest["verification"]["comparisons"]]
    assert pairs == [("pytorch", "onnxruntime"), ("onnxruntime", "tensorrt")]
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    with load_model(out / "model.onnx") as onnx_model, load_model(out / "model.engine") as engine:
        a, b = onnx_model.run(x).astype(np.float32), engine.run(x).astype(np.float32)
    assert np.abs(a - b).max() <= manifest["verification"]["tolerance"] * np.abs(a).max()
    assert main(["verify", str(out)]) == 0


@pytest.mark.tensorrt
def test_bench_times_the_engine_with_the_tensorrt_backend(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["finalize", str(EXAMPLE), "--out", str(out), "--precision", "fp16", "--engine", "--no-measure"]) == 0
    capsys.readouterr()
    hardware = detect_hardware()
    gpu = next(name for name, spec in DEVICES.items() if spec.kind == "cuda" and spec.matches(hardware))
    assert main(["bench", str(out / "model.engine"), "--device", gpu, "--backend", "tensorrt", "--runs", "20"]) == 0
    assert "with tensorrt" in capsys.readouterr().out
