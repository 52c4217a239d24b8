"""Concrete model -> deployable ONNX: skips gone, BN folded, pruning kept, QDQ per layer, numerics."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from onnxnas.deploy.concrete import build_concrete, layer_weight_bits, quantized_reference
from onnxnas.deploy.graph import deployable_onnx
from onnxnas.deploy.inputs import sample_inputs
from onnxnas.deploy.verify import TOLERANCES
from onnxnas.errors import OnnxNasError
from onnxnas.space import load_space
from onnxnas.space.choose import make_arch

BASE = [{"kernel_size": 3}, {"kernel_size": 3, "hidden_chs": 32, "se": True}, {"kernel_size": 3, "hidden_chs": 48},
        {"kernel_size": 5, "hidden_chs": 48, "se": True}, {"kernel_size": 3, "hidden_chs": 64}, "skip"]


def arch_with(**layers):
    """The base arch with layer ``l<i>`` replaced (a dict of extra fields, or "skip")."""
    choices = []
    for i, choice in enumerate(BASE):
        change = layers.get(f"l{i}")
        choices.append(change if change == "skip" else dict(choice, **(change or {})) if change else choice)
    return make_arch(load_space("tiny"), choices)


def to_onnx(arch, precision="fp32", sparsity=None):
    samples = sample_inputs("synthetic", arch, calibration=8, verification=2)
    concrete = build_concrete(arch, None, sparsity=sparsity, bn_batches=samples.calibration)
    bits = layer_weight_bits(arch, precision)
    proto, report = deployable_onnx(concrete.module, arch.input_shape, precision, bits,
                                    samples.calibration if precision == "int8" else None)
    return proto, report, concrete, quantized_reference(concrete.module, bits), samples


def max_error(proto, reference, samples) -> tuple[float, float]:
    """(max abs difference, peak |reference|) over the verification samples."""
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    dtype = np.float16 if session.get_inputs()[0].type == "tensor(float16)" else np.float32
    errors, peaks = [], []
    for x in samples.verification:
        with torch.no_grad():
            expected = reference(torch.from_numpy(x)).numpy()
        got = session.run(None, {"input": x.astype(dtype)})[0].astype(np.float32)
        errors.append(np.abs(got - expected).max())
        peaks.append(np.abs(expected).max())
    return float(max(errors)), float(max(peaks))


def conv_weights(proto: onnx.ModelProto, layer: int) -> list[np.ndarray]:
    """Weights of the Conv nodes of one arch layer, dequantized-source (int8) or float."""
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    producers = {o: n for n in proto.graph.node for o in n.output}
    found = []
    for node in proto.graph.node:
        if node.op_type == "Conv" and f"/blocks.{layer}/" in node.name:
            name = node.input[1]
            if name in producers and producers[name].op_type == "DequantizeLinear":
                name = producers[name].input[0]
            found.append(inits[name])
    return found


def test_skipped_layer_leaves_no_nodes_and_bn_is_folded() -> None:
    with_block, *_ = to_onnx(arch_with())
    skipped, *_ = to_onnx(arch_with(l2="skip"))
    names = [n.name for n in skipped.graph.node]
    block_nodes = [n for n in with_block.graph.node if "/blocks.2/" in n.name]
    assert block_nodes and not any("/blocks.2/" in n for n in names)
    assert len(names) == len(with_block.graph.node) - len(block_nodes)
    assert {n.op_type for n in skipped.graph.node}.isdisjoint({"Identity", "BatchNormalization"})
    onnx.checker.check_model(skipped, full_check=True)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_pytorch_and_onnxruntime_agree_within_the_precision_tolerance(precision: str) -> None:
    proto, _, _, reference, samples = to_onnx(arch_with(), precision)
    error, peak = max_error(proto, reference, samples)
    assert peak > 0.1  # BN statistics from data: the output is not just the classifier bias
    assert error <= TOLERANCES[precision] * peak
    ops = {n.op_type for n in proto.graph.node}
    assert ("QuantizeLinear" in ops) == (precision == "int8")
    assert proto.graph.input[0].type.tensor_type.elem_type == (onnx.TensorProto.FLOAT16 if precision == "fp16"
                                                              else onnx.TensorProto.FLOAT)


def test_four_bit_layer_is_int8_qdq_on_a_15_level_grid() -> None:
    proto, report, _, reference, samples = to_onnx(arch_with(l3={"weight_bits": 4}))
    weights = conv_weights(proto, 3)
    assert len(weights) == 5  # pw, dw, SE reduce, SE expand, pwl
    for w in weights:
        assert w.dtype == np.int8
        assert np.abs(w).max() <= 7
        assert max(len(np.unique(channel)) for channel in w.reshape(w.shape[0], -1)) <= 15
    assert all(w.dtype == np.float32 for w in conv_weights(proto, 4))  # other layers stay float
    assert len(report["quantized_weights"]) == 5
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    for node in (n for n in proto.graph.node if n.op_type == "DequantizeLinear"):
        assert (inits[node.input[1]] > 0).all() and not inits[node.input[2]].any()  # TensorRT's QDQ rules
    error, peak = max_error(proto, reference, samples)
    assert error <= TOLERANCES["fp32"] * peak  # the reference is on the same 4-bit grid


def test_nonzero_fraction_prunes_by_magnitude_and_survives_folding() -> None:
    proto, _, concrete, *_ = to_onnx(arch_with(l4={"nonzero_fraction": 0.5}))
    assert concrete.sparsity["layers"]["4"] == {"target_nonzero": 0.5, "nonzero": 0.5}
    weights = conv_weights(proto, 4)
    nonzero = sum(np.count_nonzero(w) for w in weights) / sum(w.size for w in weights)
    assert nonzero == pytest.approx(0.5, abs=0.01)


def test_two_four_sparsity_pattern() -> None:
    _, _, concrete, *_ = to_onnx(arch_with(), sparsity="2:4")
    conv = concrete.module.blocks[4].conv_pwl.conv.weight  # 32 x 64 x 1 x 1
    groups = conv.movedim(1, -1).reshape(-1, 4)
    assert (groups.count_nonzero(dim=1) <= 2).all()
    assert concrete.sparsity["structured"]["tensors"] > 0
    stem = concrete.module.stem.conv.weight  # 3 input channels: not eligible, left dense
    assert stem.count_nonzero() == stem.numel()


def test_weight_bits_without_an_integer_format_are_refused() -> None:
    with pytest.raises(OnnxNasError, match="layer 3: weight_bits 16"):
        layer_weight_bits(arch_with(l3={"weight_bits": 16}), "fp32")
