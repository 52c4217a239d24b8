"""Trained grids deploy exactly (docs/design.md §7, §8, §12): checkpoint ranges and bits -> INT8 integers.

A search saves per-tensor (UDC) or per-output-channel (filter groups) ranges and bits; the deployed
graph must hold the trained quantizer's integers, BN folded into the per-channel scales, and compute
PyTorch's fake-quantized network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from onnxnas.arch import load_arch
from onnxnas.compress.quantizer import integers, max_level
from onnxnas.deploy.checkpoint import load_checkpoint
from onnxnas.deploy.concrete import build_concrete, layer_weight_bits, quantized_reference
from onnxnas.deploy.graph import deployable_onnx
from onnxnas.deploy.grids import weight_grids
from onnxnas.deploy.inputs import sample_inputs
from onnxnas.deploy.verify import TOLERANCES
from onnxnas.errors import OnnxNasError
from onnxnas.export import INPUT_NAME

TINY = Path(__file__).resolve().parents[1] / "examples" / "tiny.arch.json"
GROUPED = "blocks.3.conv_pw.0.weight"  # 96 filters in four groups, one per bitwidth
MASKED = "blocks.4.conv_pw.0.weight"  # hidden channels 5 and 9 masked (BN maps 0 to 0): dropped
NEGATED = "blocks.1.conv_exp.0"  # BN gamma < 0 on its first 8 channels


@pytest.fixture(scope="module")
def arch():
    return load_arch(TINY)


@pytest.fixture(scope="module")
def samples(arch):
    return sample_inputs("digits", arch, calibration=8, verification=3)


def _network(arch, samples) -> nn.Module:
    module = build_concrete(arch, None, bn_batches=samples.calibration).module
    with torch.no_grad():
        norms = dict(module.named_modules())
        norms[NEGATED[:-2] + ".1"].weight[:8] *= -1
        norms["blocks.4.conv_pw.0"].weight[[5, 9]] = 0  # a width mask: hidden channels 5 and 9 of layer 4
        for bn in (norms["blocks.4.conv_pw.1"], norms["blocks.4.conv_dw.1"]):
            bn.running_mean[[5, 9]] = 0
            bn.bias[[5, 9]] = 0
        norms["blocks.0.0"].weight[0, :4] = 0  # unstructured zeros inside a live channel
    return module


def _checkpoint(module: nn.Module, bits: int) -> dict:
    """Per-tensor grids at ``bits`` on every conv (range 0.7 max|w|: the largest weights saturate), one grouped conv."""
    ranges, grid_bits = {}, {}
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d):
            ranges[f"{name}.weight"] = 0.7 * float(m.weight.detach().abs().max())
            grid_bits[f"{name}.weight"] = bits
    grouped = dict(module.named_modules())[GROUPED[:-7]].weight.detach()
    groups = [8] * 24 + [4] * 24 + [2] * 24 + [1] * 24
    ranges[GROUPED] = torch.tensor([0.9, 0.6, 0.4, 0.2]).repeat_interleave(24) * float(grouped.abs().max())
    grid_bits[GROUPED] = torch.tensor(groups)
    return {"quant_ranges": ranges, "quant_bits": grid_bits}


def _dq_weights(proto: onnx.ModelProto) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Parameter name -> (INT8 values, scales, zero points) of each Conv's weight DequantizeLinear.

    The integers keep the parameter's name plus what the passes did (``_folded``, ``_pruned``)."""
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    producers = {out: n for n in proto.graph.node for out in n.output}
    found = {}
    for node in proto.graph.node:
        if node.op_type == "Conv":
            dq = producers[node.input[1]]
            assert dq.op_type == "DequantizeLinear"
            found[dq.input[0].split(".weight")[0] + ".weight"] = tuple(inits[i] for i in dq.input)
    return found


def _relative_error(proto: onnx.ModelProto, reference: nn.Module, inputs: list[np.ndarray]) -> float:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    worst = 0.0
    with torch.no_grad():
        for x in inputs:
            expected = reference(torch.from_numpy(x)).numpy()
            got = session.run(None, {INPUT_NAME: x})[0]
            worst = max(worst, float(np.abs(got - expected).max() / np.abs(expected).max()))
    return worst


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_trained_grids_deploy_exactly(bits: int, arch, samples) -> None:
    module = _network(arch, samples)
    grids = weight_grids(_checkpoint(module, bits), module, "ckpt.pt")
    layer_bits = layer_weight_bits(arch, "fp32")  # fp32: only the grids are quantized, activations stay float
    proto, report = deployable_onnx(module, arch.input_shape, "fp32", layer_bits, grids=grids)
    reference = quantized_reference(module, layer_bits, grids)

    assert report["zero_channels_dropped"] == {"/blocks/blocks.4/conv_pw/conv_pw.0/Conv": 2,
                                               "/blocks/blocks.4/conv_dw/conv_dw.0/Conv": 2}
    by_param = _dq_weights(proto)
    assert len(by_param) == 13  # every conv, none left float
    modules = dict(module.named_modules())
    for name, (q, scale, zero_point) in by_param.items():
        assert (scale > 0).all() and scale.dtype == np.float32 and not zero_point.any()
        if name != GROUPED:  # one b-bit grid: at most 2 (b = 1) or 2^b - 2 distinct non-zero integers
            assert np.abs(q).max() <= max_level(bits)
            assert len(np.unique(q[q != 0])) <= (2 if bits == 1 else 2**bits - 2)

    # the trained quantizer's integers, BN's sign applied, channels 5 and 9 gone
    theta = modules["blocks.4.conv_pw.0"].weight.detach()
    r = torch.tensor(0.7 * float(theta.abs().max()))
    sign = torch.sign(modules["blocks.4.conv_pw.1"].weight.detach()).to(torch.int8).view(-1, 1, 1, 1)
    expected = (integers(theta, bits, r) * sign).numpy()
    np.testing.assert_array_equal(by_param[MASKED][0], np.delete(expected, [5, 9], axis=0))
    # grouped conv: each group within its own grid, its own range as the scale before BN
    q = by_param[GROUPED][0].reshape(96, -1)
    for g, b in enumerate([8, 4, 2, 1]):
        assert np.abs(q[24 * g:24 * (g + 1)]).max() <= max_level(b)
    # negative gamma: integers negated, scale positive
    theta = modules[NEGATED].weight.detach()
    pre = integers(theta, bits, torch.tensor(0.7 * float(theta.abs().max())))
    np.testing.assert_array_equal(by_param[f"{NEGATED}.weight"][0][:8], -pre[:8].numpy())
    assert not by_param["blocks.0.0.weight"][0][0, :4].any()  # exact zeros stay zero

    # weights-only QDQ at fp32: ORT computes the fake-quantized PyTorch network up to fp32 rounding (measured ~1e-6)
    assert _relative_error(proto, reference, samples.verification) <= TOLERANCES["fp32"]


def test_trained_grids_int8_within_the_int8_tolerance(arch, samples) -> None:
    module = _network(arch, samples)
    grids = weight_grids(_checkpoint(module, 8), module, "ckpt.pt")
    layer_bits = layer_weight_bits(arch, "int8")
    proto, _ = deployable_onnx(module, arch.input_shape, "int8", layer_bits, samples.calibration, grids)
    fp32, _ = deployable_onnx(module, arch.input_shape, "fp32", layer_bits, grids=grids)
    q_int8 = {k: v[0] for k, v in _dq_weights(proto).items()}
    assert all(np.array_equal(q_int8[k], v[0]) for k, v in _dq_weights(fp32).items())  # same integers
    error = _relative_error(proto, quantized_reference(module, layer_bits, grids), samples.verification)
    assert error <= TOLERANCES["int8"] and error < 0.1  # measured ~0.017


def test_checkpoint_carries_grids(tmp_path: Path, arch, samples) -> None:
    module = _network(arch, samples)
    path = tmp_path / "ckpt.pt"
    torch.save({"onnxnas_checkpoint": 1, "state_dict": module.state_dict(), **_checkpoint(module, 4)}, path)
    checkpoint = load_checkpoint(path)
    grids = weight_grids(checkpoint.quantizers, module, checkpoint.source)
    assert grids["stem.0.weight"].bits == 4 and grids[GROUPED].bits.shape == (96,)
    assert grids["stem.0.weight"].range == pytest.approx(0.7 * float(module.stem[0].weight.detach().abs().max()))
    assert load_checkpoint(_plain_state(tmp_path, module)).quantizers == {}


def _plain_state(tmp_path: Path, module: nn.Module) -> Path:
    path = tmp_path / "plain.pt"
    torch.save(module.state_dict(), path)
    return path


@pytest.mark.parametrize(("fields", "message"), [
    ({"quant_ranges": {"blocks.9.conv.weight": 1.0}}, r"\$\.quant_ranges\.blocks\.9\.conv\.weight: names no conv"),
    ({"quant_ranges": {"stem.0.weight": [1.0, 2.0]}}, r"has 2 entries; the layer has 16 output channels"),
    ({"quant_ranges": {"stem.0.weight": 0.0}}, r"expected a non-empty list of positive finite numbers"),
    ({"quant_ranges": {"stem.0.weight": float("nan")}}, r"positive finite numbers"),
    ({"quant_ranges": {"stem.0.weight": 1.0}, "quant_bits": {"stem.0.weight": 9}}, r"integers in 1\.\.8"),
    ({"quant_ranges": {}, "quant_bits": {"stem.0.weight": 4}}, r"has bits but no trained range"),
])
def test_bad_grids_are_one_line_user_errors(fields: dict, message: str, arch, samples) -> None:
    module = build_concrete(arch, None).module
    with pytest.raises(OnnxNasError, match=message) as caught:
        weight_grids(fields, module, "ckpt.pt")
    assert "ckpt.pt" in str(caught.value) and "\n" not in str(caught.value)


def test_a_range_on_a_float_layer_is_refused(arch) -> None:
    module = build_concrete(arch, None).module
    grids = weight_grids({"quant_ranges": {"stem.0.weight": 1.0}}, module, "ckpt.pt")
    with pytest.raises(OnnxNasError, match="deploys as float"):
        deployable_onnx(module, arch.input_shape, "fp32", layer_weight_bits(arch, "fp32"), grids=grids)
