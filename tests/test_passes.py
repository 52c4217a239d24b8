"""Graph passes: each test checks graph structure and ONNX Runtime numerics before vs after."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from onnxnas.errors import OnnxNasError
from onnxnas.export import INPUT_NAME, export_bytes
from passes import (
    CheckAndInferPass,
    ConvertFloat16Pass,
    DropZeroChannelsPass,
    FoldBatchNormPass,
    QuantizeActivationsPass,
    QuantizeWeightsPass,
    calibrate_activation_ranges,
    cleanup_passes,
    default_pipeline,
    quantize_weight,
    run_passes,
)
from passes.qdq import MIN_SCALE

SHAPE = (1, 8, 8, 8)


# --- test networks -------------------------------------------------------------------


class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, act: nn.Module, *, bias: bool = False, groups: int = 1):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=bias, groups=groups), nn.BatchNorm2d(cout), act)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, hidden: int = 4):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)


class InvertedResidual(nn.Module):
    """pw (SiLU) -> depthwise (HardSwish) -> SE -> pw-linear + residual -> GAP -> Flatten -> Linear."""

    def __init__(self, channels: int = 8, expand: int = 16):
        super().__init__()
        self.pw = nn.Conv2d(channels, expand, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(expand)
        self.dw = nn.Conv2d(expand, expand, 3, padding=1, groups=expand, bias=False)
        self.bn2 = nn.BatchNorm2d(expand)
        self.se = SqueezeExcite(expand)
        self.pwl = nn.Conv2d(expand, channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)
        self.head = nn.Linear(channels, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.silu(self.bn1(self.pw(x)))
        y = self.se(nn.functional.hardswish(self.bn2(self.dw(y))))
        y = self.bn3(self.pwl(y)) + x
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


def _randomize_bn(module: nn.Module) -> nn.Module:
    """Non-trivial BN statistics, negative gammas included."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(-1.5, 1.5)
            m.bias.data.uniform_(-1, 1)
    return module


def _zero_channels(conv: nn.Conv2d, bn: nn.BatchNorm2d, channels: list[int]) -> None:
    """Zero a channel's weights and make BN map 0 to 0, so the folded channel is exactly zero."""
    with torch.no_grad():
        conv.weight[channels] = 0
        bn.running_mean[channels] = 0
        bn.bias[channels] = 0


# --- helpers -------------------------------------------------------------------------


def _export(module: nn.Module, shape: tuple[int, ...] = SHAPE) -> onnx.ModelProto:
    return onnx.load_from_string(export_bytes(module, shape, fold_constants=False))


def _apply(model: onnx.ModelProto, *steps: ir.passes.PassBase) -> onnx.ModelProto:
    return run_passes(model, ir.passes.PassManager(list(steps)))


def _folded(model: onnx.ModelProto) -> onnx.ModelProto:
    return _apply(model, FoldBatchNormPass(), cleanup_passes())


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _ops(model: onnx.ModelProto) -> Counter:
    return Counter(node.op_type for node in model.graph.node)


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def _producer(model: onnx.ModelProto, tensor: str) -> onnx.NodeProto | None:
    return next((n for n in model.graph.node if tensor in n.output), None)


def _weight(model: onnx.ModelProto, node_name: str, index: int = 1) -> np.ndarray:
    return _inits(model)[_node(model, node_name).input[index]]


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)


@pytest.fixture
def block() -> onnx.ModelProto:
    return _export(_randomize_bn(InvertedResidual()))


# --- fold BN -------------------------------------------------------------------------


@pytest.mark.parametrize("act", [nn.ReLU(), nn.SiLU()], ids=["relu", "silu"])
@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
def test_fold_bn(act: nn.Module, bias: bool, x: np.ndarray) -> None:
    model = _export(_randomize_bn(ConvBNAct(8, 12, act, bias=bias)))
    assert _ops(model)["BatchNormalization"] == 1
    fold = FoldBatchNormPass()
    folded = _apply(model, fold, cleanup_passes())

    assert _ops(folded)["BatchNormalization"] == 0
    assert fold.folded == ["/1/BatchNormalization"]
    conv = _node(folded, "/0/Conv")
    assert len(conv.input) == 3  # a bias was created where the Conv had none
    assert _weight(folded, "/0/Conv").shape == (12, 8, 3, 3)
    assert _weight(folded, "/0/Conv", 2).shape == (12,)
    assert {t.data_type for t in folded.graph.initializer} == {onnx.TensorProto.FLOAT}
    np.testing.assert_allclose(_run(folded, x), _run(model, x), atol=1e-5)


def test_fold_bn_of_the_graph_output_keeps_its_type(caplog: pytest.LogCaptureFixture) -> None:
    """A block ending in Conv -> BN: the Conv output becomes the graph output with dtype and shape,
    so serializing it logs no onnx_ir "value type ... is not known" warning (build-lut int8 did, per block)."""
    model = ir.from_proto(_export(nn.Sequential(nn.Conv2d(8, 6, 1), nn.BatchNorm2d(6))))
    FoldBatchNormPass()(model)
    (output,) = model.graph.outputs
    assert output.dtype == ir.DataType.FLOAT and list(output.shape) == [1, 6, 8, 8]
    with caplog.at_level("WARNING"):
        proto = ir.to_proto(model)
    assert "is not known" not in caplog.text
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_fold_bn_through_identity_parameters(x: np.ndarray) -> None:
    """Default BN statistics are equal tensors, which the legacy exporter shares via Identity."""
    model = _export(nn.Sequential(ConvBNAct(8, 8, nn.ReLU()), ConvBNAct(8, 8, nn.ReLU())))
    assert _ops(model)["Identity"] > 0
    folded = _folded(model)
    assert _ops(folded) == Counter({"Conv": 2, "Relu": 2})
    np.testing.assert_allclose(_run(folded, x), _run(model, x), atol=1e-5)


def test_fold_bn_skips_conv_with_two_consumers(x: np.ndarray) -> None:
    class Branch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8)

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            y = self.conv(t)
            return self.bn(y) + y

    model = _export(_randomize_bn(Branch()))
    folded = _folded(model)
    assert _ops(folded)["BatchNormalization"] == 1
    np.testing.assert_allclose(_run(folded, x), _run(model, x), atol=1e-6)


# --- cleanup -------------------------------------------------------------------------


def test_cleanup_removes_identities_and_unused_initializers(x: np.ndarray) -> None:
    model = _export(nn.Sequential(ConvBNAct(8, 8, nn.ReLU())))
    folded_only = _apply(model, FoldBatchNormPass())
    assert _ops(folded_only)["Identity"] > 0  # dead BN parameters still there
    cleaned = _apply(folded_only, cleanup_passes())
    assert _ops(cleaned) == Counter({"Conv": 1, "Relu": 1})
    used = {name for node in cleaned.graph.node for name in node.input}
    assert set(_inits(cleaned)) <= used  # every initializer left is read by a node
    np.testing.assert_allclose(_run(cleaned, x), _run(model, x), atol=1e-5)


# --- drop zero channels --------------------------------------------------------------


def test_drop_zero_channels_through_silu_depthwise_and_se(x: np.ndarray) -> None:
    net = _randomize_bn(InvertedResidual())
    dropped = [1, 5, 9, 13]
    _zero_channels(net.pw, net.bn1, dropped)
    _zero_channels(net.dw, net.bn2, dropped)  # dw bias after folding must be zero too
    model = _folded(_export(net))
    assert _weight(model, "/pw/Conv").shape == (16, 8, 1, 1)

    prune = DropZeroChannelsPass()
    pruned = _apply(model, prune, cleanup_passes())

    assert prune.dropped == {"/pw/Conv": dropped, "/dw/Conv": dropped, "/se/fc2/Conv": dropped}
    assert prune.blocked == {}
    assert _weight(pruned, "/pw/Conv").shape == (12, 8, 1, 1)
    assert _weight(pruned, "/pw/Conv", 2).shape == (12,)
    assert _weight(pruned, "/dw/Conv").shape == (12, 1, 3, 3)
    dw_group = next(a.i for a in _node(pruned, "/dw/Conv").attribute if a.name == "group")
    assert dw_group == 12
    assert _weight(pruned, "/se/fc1/Conv").shape == (4, 12, 1, 1)
    assert _weight(pruned, "/se/fc2/Conv").shape == (12, 4, 1, 1)
    assert _weight(pruned, "/se/fc2/Conv", 2).shape == (12,)
    assert _weight(pruned, "/pwl/Conv").shape == (8, 12, 1, 1)
    assert _ops(pruned) == _ops(model)
    onnx.checker.check_model(pruned, full_check=True)
    np.testing.assert_allclose(_run(pruned, x), _run(model, x), atol=1e-6)


def test_drop_zero_channels_into_gemm_head(x: np.ndarray) -> None:
    net = nn.Sequential(
        ConvBNAct(8, 16, nn.ReLU()),
        ConvBNAct(16, 10, nn.ReLU6()),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(10, 5),
    )
    _randomize_bn(net)
    _zero_channels(net[1][0], net[1][1], [2, 7])
    model = _folded(_export(net))
    prune = DropZeroChannelsPass()
    pruned = _apply(model, prune, cleanup_passes())

    assert prune.dropped == {"/1/1.0/Conv": [2, 7]}  # the legacy exporter's scope names
    assert _weight(pruned, "/1/1.0/Conv").shape == (8, 16, 3, 3)
    assert _weight(pruned, "/4/Gemm").shape == (5, 8)
    assert _ops(pruned)["Clip"] == 1  # ReLU6 (Clip 0..6) keeps zero at zero
    np.testing.assert_allclose(_run(pruned, x), _run(model, x), atol=1e-6)


def test_drop_zero_channels_of_a_gated_product(x: np.ndarray) -> None:
    """``a * relu(b)`` is zero where either factor is: both Convs lose the union of their zero channels."""

    class Gated(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(8, 6, 3, padding=1), nn.Conv2d(8, 6, 1), nn.Conv2d(6, 4, 1)

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.c(self.a(t) * torch.relu(self.b(t)))

    net = Gated()
    with torch.no_grad():
        for conv, channel in ((net.a, 1), (net.b, 4)):  # b is pruned second, already sliced
            conv.weight[channel] = 0
            conv.bias[channel] = 0
    model = _export(net)
    prune = DropZeroChannelsPass()
    pruned = _apply(model, prune, cleanup_passes())

    assert prune.dropped == {"/a/Conv": [1, 4], "/b/Conv": [1, 4]}  # indices of the original weights
    assert _weight(pruned, "/a/Conv").shape == (4, 8, 3, 3)
    assert _weight(pruned, "/b/Conv").shape == (4, 8, 1, 1)
    assert _weight(pruned, "/c/Conv").shape == (4, 4, 1, 1)
    np.testing.assert_allclose(_run(pruned, x), _run(model, x), atol=1e-6)


def test_drop_zero_channels_stops_at_residual_add(x: np.ndarray) -> None:
    net = _randomize_bn(InvertedResidual())
    _zero_channels(net.pwl, net.bn3, [0, 3])
    model = _folded(_export(net))
    prune = DropZeroChannelsPass()
    pruned = _apply(model, prune, cleanup_passes())

    assert prune.dropped == {}
    assert prune.blocked == {"/pwl/Conv": [0, 3]}
    assert _weight(pruned, "/pwl/Conv").shape == (8, 16, 1, 1)
    np.testing.assert_allclose(_run(pruned, x), _run(model, x), atol=1e-6)


def test_drop_zero_channels_keeps_channels_that_become_nonzero(x: np.ndarray) -> None:
    """A zero channel is not zero after a depthwise bias or a Sigmoid: nothing may be dropped."""
    net = _randomize_bn(InvertedResidual())
    _zero_channels(net.pw, net.bn1, [0, 1])  # bn2 stays random: the dw bias is not zero
    sigmoid_net = _randomize_bn(nn.Sequential(ConvBNAct(8, 8, nn.Sigmoid()), nn.Conv2d(8, 4, 1)))
    _zero_channels(sigmoid_net[0][0], sigmoid_net[0][1], [2])
    for model in (_folded(_export(net)), _folded(_export(sigmoid_net))):
        prune = DropZeroChannelsPass()
        pruned = _apply(model, prune, cleanup_passes())
        assert prune.dropped == {}
        assert len(prune.blocked) == 1
        assert _inits(pruned).keys() == _inits(model).keys()
        np.testing.assert_allclose(_run(pruned, x), _run(model, x), atol=1e-6)


# --- QDQ -----------------------------------------------------------------------------


def _reference_dequantize(w: np.ndarray, bits: int) -> np.ndarray:
    """Independent numpy reference for symmetric per-output-channel weights (axis 0)."""
    flat = w.reshape(w.shape[0], -1).astype(np.float64)
    if bits == 1:
        scale = np.abs(flat).mean(axis=1).astype(np.float32)
        return (np.sign(flat) * scale[:, None]).astype(np.float32).reshape(w.shape)
    qmax = 2 ** (bits - 1) - 1
    scale = (np.abs(flat).max(axis=1) / qmax).astype(np.float32)
    q = np.clip(np.round(flat / np.where(scale > 0, scale, 1)[:, None]), -qmax, qmax)
    return (q.astype(np.float32) * scale[:, None]).reshape(w.shape)


def _with_weights(model: onnx.ModelProto, weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    out = onnx.ModelProto.FromString(model.SerializeToString())
    for tensor in out.graph.initializer:
        if tensor.name in weights:
            tensor.CopyFrom(numpy_helper.from_array(weights[tensor.name], tensor.name))
    return out


def _dq_of(model: onnx.ModelProto, node_name: str) -> onnx.NodeProto | None:
    producer = _producer(model, _node(model, node_name).input[1])
    return producer if producer is not None and producer.op_type == "DequantizeLinear" else None


def test_quantize_weights_int8_per_channel(block: onnx.ModelProto, x: np.ndarray) -> None:
    model = _folded(block)
    float_weights = {n.name: _weight(model, n.name) for n in model.graph.node if n.op_type in ("Conv", "Gemm")}
    qpass = QuantizeWeightsPass(8)
    quantized = _apply(model, qpass, cleanup_passes())
    inits = _inits(quantized)

    assert set(qpass.quantized) == set(float_weights) and set(qpass.quantized.values()) == {8}
    assert _ops(quantized)["DequantizeLinear"] == len(float_weights)
    reference = {}
    for name, w in float_weights.items():
        dq = _dq_of(quantized, name)
        q, scale, zero_point = (inits[i] for i in dq.input)
        assert next(a.i for a in dq.attribute if a.name == "axis") == 0
        assert q.dtype == np.int8 and q.shape == w.shape
        assert scale.dtype == np.float32 and scale.shape == (w.shape[0],) and (scale > 0).all()
        assert zero_point.dtype == np.int8 and not zero_point.any()
        np.testing.assert_allclose(q * scale.reshape(-1, *[1] * (w.ndim - 1)), _reference_dequantize(w, 8), atol=1e-7)
        reference[_node(model, name).input[1]] = _reference_dequantize(w, 8)

    # Numerics: identical to the float graph carrying the numpy-dequantized weights ...
    y_q = _run(quantized, x)
    np.testing.assert_allclose(y_q, _run(_with_weights(model, reference), x), atol=1e-5)
    # ... and close to the float model relative to the output scale.
    y = _run(model, x)
    relative = np.abs(y_q - y).max() / np.abs(y).max()
    print(f"int8 weight QDQ: max |error| / max |output| = {relative:.2e}")
    assert relative < 0.02


def test_quantize_weights_mixed_bits(block: onnx.ModelProto, x: np.ndarray) -> None:
    model = _folded(block)
    bits = {"/pw/Conv": 4, "/dw/Conv": 1, "head.weight": 32}  # node names, or a weight name
    qpass = QuantizeWeightsPass(bits)
    quantized = _apply(model, qpass, cleanup_passes())
    inits = _inits(quantized)

    assert qpass.quantized == {"/pw/Conv": 4, "/dw/Conv": 1}
    assert _ops(quantized)["DequantizeLinear"] == 2
    for name in ("/head/Gemm", "/pwl/Conv", "/se/fc1/Conv"):
        assert _dq_of(quantized, name) is None
    q4, s4, _ = (inits[i] for i in _dq_of(quantized, "/pw/Conv").input)
    assert np.abs(q4).max() == 7 and q4.dtype == np.int8
    q1, s1, _ = (inits[i] for i in _dq_of(quantized, "/dw/Conv").input)
    assert set(np.unique(q1)) <= {-1, 0, 1}
    dw = _weight(model, "/dw/Conv")
    np.testing.assert_allclose(s1, np.abs(dw).reshape(16, -1).mean(axis=1), rtol=1e-6)

    reference = {
        _node(model, "/pw/Conv").input[1]: _reference_dequantize(_weight(model, "/pw/Conv"), 4),
        _node(model, "/dw/Conv").input[1]: _reference_dequantize(dw, 1),
    }
    np.testing.assert_allclose(_run(quantized, x), _run(_with_weights(model, reference), x), atol=1e-5)


def test_quantize_weights_zero_channel_and_bad_bits() -> None:
    w = np.random.default_rng(1).standard_normal((4, 3, 3, 3)).astype(np.float32)
    w[2] = 0
    for bits in (1, 4, 8):
        q, scale = quantize_weight(w, bits)
        assert (scale > 0).all() and scale[2] == MIN_SCALE
        assert not q[2].any()
    with pytest.raises(ValueError, match="1..8"):
        QuantizeWeightsPass(16)
    model = ir.from_proto(_folded(_export(ConvBNAct(8, 4, nn.ReLU()))))
    with pytest.raises(ValueError, match="unknown layers"):
        QuantizeWeightsPass({"/typo/Conv": 4})(model)


def test_quantize_activations_calibrated(block: onnx.ModelProto, x: np.ndarray) -> None:
    model = _folded(block)
    rng = np.random.default_rng(2)
    batches = [rng.standard_normal(SHAPE).astype(np.float32) for _ in range(3)]
    ranges = calibrate_activation_ranges(model, batches)
    # Every tensor an integer kernel reads or writes, nothing else: HardSwish's output (it feeds the SE
    # pool and Mul) is quantized, the SE gate's Sigmoid too; SiLU's Sigmoid stays float (swish runs as one
    # float QuickGelu) and so do the Linear's logits.
    assert INPUT_NAME in ranges and "/Add_output_0" in ranges and "/se/Sigmoid_output_0" in ranges
    assert "/Sigmoid_output_0" not in ranges and "/Mul_output_0" in ranges  # SiLU: float inside, INT8 out
    assert _node(model, "/head/Gemm").output[0] not in ranges
    assert ranges[INPUT_NAME] == pytest.approx(max(np.abs(b).max() for b in batches))

    apass = QuantizeActivationsPass(batches=batches)
    quantized = _apply(model, apass, QuantizeWeightsPass(8), cleanup_passes())
    inits = _inits(quantized)
    assert apass.scales == pytest.approx({k: v / 127 for k, v in ranges.items()})
    consumers = Counter(i for n in quantized.graph.node for i in n.input)
    swish = {"/Sigmoid", "/Mul"}  # SiLU: float between its input's DQ and its output's Q
    for node in quantized.graph.node:
        if node.op_type in ("Conv", "Add", "Mul", "Sigmoid") and node.name not in swish:  # DQ in, one Q out
            assert {_producer(quantized, i).op_type for i in node.input[:2]} == {"DequantizeLinear"}
            assert consumers[node.output[0]] == 1
            assert next(n for n in quantized.graph.node if node.output[0] in n.input).op_type == "QuantizeLinear"
        if node.op_type == "QuantizeLinear":  # TensorRT: symmetric, zero point 0, positive constant scale
            scale, zero_point = inits[node.input[1]], inits[node.input[2]]
            assert scale.shape == () and scale > 0 and scale.dtype == np.float32
            assert zero_point.shape == () and zero_point == 0 and zero_point.dtype == np.int8
            assert consumers[node.output[0]] == 1  # one DQ per Q, or ORT keeps the pair INT8 and unfused

    y, y_q = _run(model, x), _run(quantized, x)
    relative = np.abs(y_q - y).max() / np.abs(y).max()
    print(f"int8 weights+activations: max |error| / max |output| = {relative:.2e}")
    assert relative < 0.05

    explicit = QuantizeActivationsPass({name: (-r, r / 2) for name, r in ranges.items()})
    _apply(model, explicit)
    assert explicit.scales == apass.scales


# --- fp16 ----------------------------------------------------------------------------


def _elem_types(values) -> set[int]:
    return {v.type.tensor_type.elem_type for v in values}


def test_convert_float16(block: onnx.ModelProto, x: np.ndarray) -> None:
    model = _folded(block)
    converted = _apply(model, ConvertFloat16Pass(), cleanup_passes())

    assert {t.data_type for t in converted.graph.initializer} == {onnx.TensorProto.FLOAT16}
    assert _elem_types([*converted.graph.input, *converted.graph.output]) == {onnx.TensorProto.FLOAT16}
    assert "Cast" not in _ops(converted)
    onnx.checker.check_model(converted, full_check=True)
    # ORT CPU computes these ops in float32 behind its own Casts: this checks fp16 weights and I/O.
    y16 = _run(converted, x.astype(np.float16))
    assert y16.dtype == np.float16
    y = _run(model, x)
    np.testing.assert_allclose(y16.astype(np.float32), y, rtol=1e-2, atol=1e-2 * np.abs(y).max())


def test_convert_float16_keep_io_types(block: onnx.ModelProto, x: np.ndarray) -> None:
    model = _folded(block)
    fp16 = ConvertFloat16Pass(keep_io_types=True)
    converted = _apply(model, fp16, cleanup_passes())

    assert _elem_types([*converted.graph.input, *converted.graph.output]) == {onnx.TensorProto.FLOAT}
    assert _ops(converted)["Cast"] == 2
    assert converted.graph.output[0].name == model.graph.output[0].name
    assert set(fp16.kept_float32) == {INPUT_NAME, model.graph.output[0].name}
    y = _run(model, x)
    np.testing.assert_allclose(_run(converted, x), y, rtol=1e-2, atol=1e-2 * np.abs(y).max())


def test_convert_float16_after_weight_qdq(block: onnx.ModelProto, x: np.ndarray) -> None:
    """Opset-17 DequantizeLinear is float32-only: its scale stays float32 and a Cast follows it."""
    quantized = _apply(_folded(block), QuantizeWeightsPass(8), cleanup_passes())
    converted = _apply(quantized, ConvertFloat16Pass(), cleanup_passes())
    inits = _inits(converted)

    dequantizers = [n for n in converted.graph.node if n.op_type == "DequantizeLinear"]
    assert dequantizers and all(inits[n.input[1]].dtype == np.float32 for n in dequantizers)
    assert _ops(converted)["Cast"] == len(dequantizers)
    for node in dequantizers:
        (cast,) = [n for n in converted.graph.node if node.output[0] in n.input]
        assert cast.op_type == "Cast" and cast.attribute[0].i == onnx.TensorProto.FLOAT16
    onnx.checker.check_model(converted, full_check=True)
    y = _run(quantized, x)
    y16 = _run(converted, x.astype(np.float16)).astype(np.float32)
    np.testing.assert_allclose(y16, y, rtol=1e-2, atol=1e-2 * np.abs(y).max())


# --- check ---------------------------------------------------------------------------


def test_check_and_infer_records_shapes_and_rejects_broken_graphs(block: onnx.ModelProto) -> None:
    model = ir.from_proto(_folded(block))
    CheckAndInferPass()(model)
    assert all(node.outputs[0].shape is not None for node in model.graph)

    broken = _folded(block)
    weight = next(t for t in broken.graph.initializer if t.name == _node(broken, "/pwl/Conv").input[1])
    weight.CopyFrom(numpy_helper.from_array(np.zeros((8, 15, 1, 1), np.float32), weight.name))
    with pytest.raises((onnx.checker.ValidationError, onnx.shape_inference.InferenceError)) as caught:
        CheckAndInferPass()(ir.from_proto(broken))
    assert not isinstance(caught.value, OnnxNasError)  # a bug in a pass, not a user error


# --- pipeline ------------------------------------------------------------------------


def test_default_pipeline_fp32(x: np.ndarray) -> None:
    net = _randomize_bn(InvertedResidual())
    _zero_channels(net.pw, net.bn1, [3])
    _zero_channels(net.dw, net.bn2, [3])
    model = _export(net)
    before = model.SerializeToString()
    pipeline = default_pipeline("fp32")
    final = run_passes(model, pipeline)

    assert model.SerializeToString() == before  # the input proto is untouched
    assert _ops(final)["BatchNormalization"] == 0 and _ops(final)["Identity"] == 0
    prune = next(p for p in pipeline.passes if isinstance(p, DropZeroChannelsPass))
    assert prune.dropped["/pw/Conv"] == [3]
    assert _weight(final, "/pwl/Conv").shape == (8, 15, 1, 1)
    np.testing.assert_allclose(_run(final, x), _run(model, x), atol=1e-5)


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_default_pipeline_quantized_and_half(precision: str, block: onnx.ModelProto, x: np.ndarray) -> None:
    kwargs = {"calibration_batches": [x]} if precision == "int8" else {"weight_bits": {"/pw/Conv": 4}}
    final = run_passes(block, default_pipeline(precision, **kwargs))
    ops = _ops(final)
    # int8: 15 quantized tensors (SiLU's Sigmoid stays float), one Q each, except two read twice by integer
    # kernels from no integer kernel (the input: pw and the residual Add; HardSwish's output: SE pool and Mul),
    # whose readers get a private Q each -> 17 Q; pw's output feeds SiLU's float Sigmoid and Mul through one
    # pair and a Max (the fan-out after an integer kernel). 6 weight DQs.
    assert ops["QuantizeLinear"] == (17 if precision == "int8" else 0)
    assert ops["DequantizeLinear"] == (17 + 6 if precision == "int8" else 1)
    assert ops["Max"] == (1 if precision == "int8" else 0)  # the fan-out after pw's integer kernel
    used = {name for node in final.graph.node for name in node.input}
    assert set(_inits(final)) <= used
    y = _run(block, x)
    y_final = _run(final, x.astype(np.float16) if precision == "fp16" else x).astype(np.float32)
    assert np.abs(y_final - y).max() / np.abs(y).max() < 0.05


def test_default_pipeline_on_half_precision_export(x: np.ndarray) -> None:
    """An fp16 export: BN folds in fp16 and each float32-only DequantizeLinear is cast back to fp16."""
    net = _randomize_bn(InvertedResidual())
    reference = _export(net)
    half = onnx.load_from_string(export_bytes(net, SHAPE, "fp16", fold_constants=False))
    final = run_passes(half, default_pipeline("fp16", weight_bits=8))

    ops = _ops(final)
    assert ops["BatchNormalization"] == 0 and ops["DequantizeLinear"] == ops["Cast"] == 6
    assert {t.data_type for t in final.graph.initializer} == {
        onnx.TensorProto.INT8,
        onnx.TensorProto.FLOAT,  # DequantizeLinear scales only
        onnx.TensorProto.FLOAT16,
    }
    y = _run(reference, x)
    y_final = _run(final, x.astype(np.float16)).astype(np.float32)
    assert np.abs(y_final - y).max() / np.abs(y).max() < 0.05


def test_default_pipeline_user_errors() -> None:
    with pytest.raises(OnnxNasError, match="calibration"):
        default_pipeline("int8")
    with pytest.raises(OnnxNasError, match="unknown precision"):
        default_pipeline("bf16")


# --- one INT8 grid per tensor (docs/design.md §7 Deploy, §8) -----------------------------------


def test_quantize_weight_takes_the_trained_range_as_the_grid() -> None:
    rng = np.random.default_rng(3)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    w[1, :2] = 0
    r = 1.5  # one range for the tensor: one grid, values beyond it saturate
    q, scale = quantize_weight(w, 4, absmax=r)
    np.testing.assert_allclose(scale, np.full(6, r / 7, np.float32))
    np.testing.assert_array_equal(q, np.clip(np.rint(w / np.float32(r / 7)), -7, 7).astype(np.int8))
    assert len(np.unique(q[q != 0])) <= 2**4 and not q[1, :2].any()
    q1, s1 = quantize_weight(w, 1, absmax=np.arange(1, 7, dtype=np.float32))  # per-channel range, sign bits
    np.testing.assert_allclose(s1, np.arange(1, 7))
    np.testing.assert_array_equal(q1, np.sign(w))
    q8, _ = quantize_weight(w, 8)  # plain checkpoint: max |w| per channel
    assert (np.abs(q8).reshape(6, -1).max(axis=1) == 127).all()


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_low_bit_layer_after_bn_fold_keeps_its_integer_budget(bits: int, x: np.ndarray) -> None:
    """A b-bit tensor: at most 2^b distinct non-zero integers, exact zeros, positive per-channel scales."""
    net = _randomize_bn(ConvBNAct(8, 6, nn.ReLU()))
    net[1].weight.data[:3] *= -1  # gamma < 0: integers negated, scale stays positive
    _zero_channels(net[0], net[1], [4])
    with torch.no_grad():
        net[0].weight[0, :4] = 0  # unstructured zeros inside a live channel
    model = _folded(_export(net))
    quantized = _apply(model, QuantizeWeightsPass(bits), cleanup_passes())
    q, scale, zero_point = (_inits(quantized)[i] for i in _dq_of(quantized, "/0/Conv").input)
    assert len(np.unique(q[q != 0])) <= 2**bits and np.abs(q).max() <= max(1, 2 ** (bits - 1) - 1)
    assert not q[0, :4].any() and not q[4].any() and (scale > 0).all() and not zero_point.any()


def test_bn_folds_into_the_dequantize_scale_and_keeps_the_integers(x: np.ndarray) -> None:
    """Quantize first, then fold: integers unchanged (negated where gamma < 0), scale x |gamma / sigma|,
    and a masked channel (zero integers, BN mapping 0 to 0) is then dropped through its INT8 weights."""
    net = _randomize_bn(InvertedResidual())
    net.bn1.weight.data[:4] = -net.bn1.weight.data[:4].abs()
    _zero_channels(net.pw, net.bn1, [6])
    _zero_channels(net.dw, net.bn2, [6])
    model = _export(net)
    quantized = _apply(model, QuantizeWeightsPass(4), cleanup_passes())
    q_before, s_before, _ = (_inits(quantized)[i] for i in _dq_of(quantized, "/pw/Conv").input)
    prune = DropZeroChannelsPass()
    final = _apply(quantized, FoldBatchNormPass(), cleanup_passes(), prune, cleanup_passes())

    q_after, s_after, zero_point = (_inits(final)[i] for i in _dq_of(final, "/pw/Conv").input)
    gamma = net.bn1.weight.detach().numpy() / np.sqrt(net.bn1.running_var.numpy() + net.bn1.eps)
    keep = np.delete(np.arange(16), 6)
    assert prune.dropped["/pw/Conv"] == [6] and q_after.shape == (15, 8, 1, 1)
    np.testing.assert_array_equal(q_after, (q_before * np.sign(gamma).reshape(-1, 1, 1, 1).astype(np.int8))[keep])
    np.testing.assert_allclose(s_after, (s_before * np.abs(gamma))[keep], rtol=1e-6)
    assert (s_after > 0).all() and not zero_point.any() and (q_after[:4] == -q_before[:4]).all()
    np.testing.assert_allclose(_run(final, x), _run(quantized, x), rtol=1e-5, atol=1e-5)
