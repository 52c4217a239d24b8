"""The deployment API: load model.onnx / model.engine and run one input; unsafe files refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from onnxnas.deploy import load_model
from onnxnas.deploy.artefacts import load_onnx
from onnxnas.errors import OnnxNasError
from onnxnas.export import export_onnx


def add_model(folder: Path, location: str | None) -> Path:
    """input + w, with ``w`` stored inline (location None) or in an external file."""
    weight = numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("Add", ["input", "w"], ["output"])], "g",
                              [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = folder / "model.onnx"
    if location is None:
        onnx.save(model, str(path))
        return path
    (folder / location).parent.mkdir(parents=True, exist_ok=True)
    (folder / location).write_bytes(np.arange(4, dtype=np.float32).tobytes())
    tensor = model.graph.initializer[0]
    onnx.external_data_helper.set_external_data(tensor, location=location)
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../secret.bin"])
def test_external_data_outside_the_folder_is_refused(location: str, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    path = add_model(folder, None)
    model = onnx.load(str(path))
    tensor = model.graph.initializer[0]
    onnx.external_data_helper.set_external_data(tensor, location=location)
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    path.write_bytes(model.SerializeToString())
    with pytest.raises(OnnxNasError, match="outside the model's folder; refused"):
        load_onnx(path)
    with pytest.raises(OnnxNasError, match="refused"):
        load_model(path)


def test_external_data_inside_the_folder_runs(tmp_path: Path) -> None:
    path = add_model(tmp_path, "weights/w.bin")
    with load_model(path) as model:
        np.testing.assert_array_equal(model.run(np.ones(4, np.float32)), [1, 2, 3, 4])


def test_load_model_runs_one_input_and_casts_to_the_model_dtype(tmp_path: Path) -> None:
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    for precision, atol in (("fp32", 1e-5), ("fp16", 1e-2)):
        path = export_onnx(module, (1, 3, 8, 8), tmp_path / precision / "model.onnx", precision)
        with load_model(path) as model:
            assert model.input_shape == (1, 3, 8, 8) and model.input_name == "input"
            np.testing.assert_allclose(model.run(x).astype(np.float32), expected, atol=atol)
            with pytest.raises(OnnxNasError, match=r"input has shape \(3, 8, 8\), the model takes \(1, 3, 8, 8\)"):
                model.run(x[0])
        module.float()


def test_unknown_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(OnnxNasError, match="unknown model file type '.pt'"):
        load_model(tmp_path / "model.pt")
    (tmp_path / "broken.onnx").write_bytes(b"not a protobuf \xff\xff")
    with pytest.raises(OnnxNasError, match="broken.onnx"):
        load_model(tmp_path / "broken.onnx")
