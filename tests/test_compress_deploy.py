"""finalize writes compressed.bin: it decodes to the ONNX file's INT8 weights, and the manifest's sizes agree."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import helper, numpy_helper

from onnxnas.arch import load_arch
from onnxnas.compress.codec import decode
from onnxnas.cost import size_report
from onnxnas.deploy.compressed import compress_weights, grid_bits, int8_weights
from onnxnas.errors import OnnxNasError
from onnxnas.finalize import FinalizeOptions, finalize

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tiny.arch.json"
COMPRESSION = {1: {"weight_bits": 4, "nonzero_fraction": 0.5}, 3: {"weight_bits": 4}, 4: {"nonzero_fraction": 0.5, "weight_bits": 8}}


def compression_space(root: Path) -> Path:
    """tiny with UDC-style option sets on every stage, so the compressed example fits its space."""
    space = yaml.safe_load((EXAMPLE.parents[1] / "onnxnas" / "space" / "builtin" / "tiny.yaml").read_text())
    for stage in space["stages"]:
        stage.update(weight_bits=[4, 8, 32], nonzero_fractions=[0.5, 1.0])
    path = root / "tiny-compressed.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, object]:
    root = tmp_path_factory.mktemp("compressed")
    arch = load_arch(EXAMPLE)
    layers = [dataclasses.replace(layer, **COMPRESSION.get(i, {})) for i, layer in enumerate(arch.layers)]
    arch = dataclasses.replace(arch, layers=tuple(layers))
    arch_path = arch.save(root / "arch.json")
    manifest = finalize(arch_path, FinalizeOptions(out=root / "deploy", verify_samples=2, calibration_samples=4,
                                                   space=str(compression_space(root))),
                        log=lambda _: None)
    return root / "deploy", manifest, arch


def test_compressed_bin_decodes_to_the_onnx_int8_weights(deployed):
    folder, manifest, _ = deployed
    model = onnx.load(str(folder / "model.onnx"))
    dq_inputs = {node.input[0] for node in model.graph.node if node.op_type == "DequantizeLinear"}
    expected = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer
                if t.data_type == onnx.TensorProto.INT8 and t.name in dq_inputs}
    decoded = decode((folder / "compressed.bin").read_bytes(), str(folder / "compressed.bin"))
    assert len(expected) == 2 + 5 + 3  # fp32 model: layers 1 (exp, pwl) and 3 (pw, dw, SE x2, pwl) 4-bit, 4 (pw, dw, pwl) 8-bit
    assert sorted(decoded) == sorted(expected)
    for name, values in expected.items():
        assert decoded[name].dtype == np.int8 and np.array_equal(decoded[name], values), name
    bits: dict[str, set[int]] = {}
    for tensor in int8_weights(model):
        bits.setdefault(tensor.name.split(".")[1], set()).add(tensor.bits)
    assert bits == {"1": {4}, "3": {4}, "4": {8}}  # each layer codes at its own bits, read from the integers


def test_manifest_sizes_are_consistent(deployed):
    folder, manifest, arch = deployed
    sizes = manifest["size"]["compressed"]
    coded = (folder / "compressed.bin").stat().st_size
    assert sizes["coded_bytes"] == coded == manifest["files"]["compressed"]["bytes"]
    assert sizes["bound_bits"] == pytest.approx(size_report(arch).total_bits)
    decoded = decode((folder / "compressed.bin").read_bytes())
    nonzero = sum(int(np.count_nonzero(v)) for v in decoded.values())
    assert sizes["int8_mask_bytes"] == nonzero + sum(-(-v.size // 8) for v in decoded.values())
    assert 0 < sizes["entropy_coded_bytes"] and sizes["tensors"] == len(decoded)
    shipped = json.loads((folder / "manifest.json").read_text())
    assert shipped["size"]["compressed"] == sizes


def test_int8_weights_are_dequantize_input0_initializers_with_grid_bits():
    weight = numpy_helper.from_array(np.array([[3, -7], [0, 1]], np.int8), "w_q")
    ternary = numpy_helper.from_array(np.array([1, 0, -1], np.int8), "t_q")
    zero = numpy_helper.from_array(np.zeros(2, np.int8), "zp")
    scale = numpy_helper.from_array(np.ones(2, np.float32), "s")
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "s", "zp"], ["w"], axis=0),
             helper.make_node("DequantizeLinear", ["t_q", "s1"], ["t"]),
             helper.make_node("QuantizeLinear", ["x", "s1", "zp1"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s1", "zp1"], ["xd"])]  # activation: not an initializer
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])], [],
                              initializer=[weight, ternary, zero, scale])
    found = int8_weights(helper.make_model(graph))
    assert [(t.name, t.bits) for t in found] == [("w_q", 4), ("t_q", 1)]  # +-1 needs one bit, whatever the grid
    assert [grid_bits(np.array(v, np.int8), "v") for v in ([127], [63], [2], [])] == [8, 7, 3, 1]
    model = helper.make_model(graph)
    tiny = load_arch(EXAMPLE)
    as_int8 = compress_weights(model, tiny, "int8")
    assert as_int8.bound_bits == 8 * sum(layer.num_weights for layer in size_report(tiny).layers)  # 32-bit layers deploy at 8
    assert compress_weights(model, tiny, "fp32").bound_bits == size_report(tiny).total_bits
    assert decode(as_int8.data)["t_q"].tolist() == [1, 0, -1]
    with pytest.raises(OnnxNasError, match="'v' holds -128"):
        grid_bits(np.array([-128], np.int8), "v")


def test_a_float_refinalize_drops_the_stale_compressed_bin(deployed, tmp_path):
    folder = shutil.copytree(deployed[0], tmp_path / "deploy")
    manifest = finalize(EXAMPLE, FinalizeOptions(out=folder, verify_samples=2, calibration_samples=4), log=lambda _: None)
    assert not (folder / "compressed.bin").exists()
    assert manifest["size"]["compressed"] is None and manifest["files"]["compressed"] is None
