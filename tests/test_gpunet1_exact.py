"""GPUNet-1 as NVIDIA builds it: 'valid' padding on the stride-2 Fused-IRBs (71x71, 35x35), BN eps 1e-3,
dropout 0.2 before the classifier, drop-path 0.2 in training."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch

from onnxnas.arch import arch_from_dict, load_arch
from onnxnas.blocks import build_model
from onnxnas.blocks.irb import InvertedResidual
from onnxnas.blocks.spec import BlockSpec
from onnxnas.deploy.onnx_counts import onnx_counts
from onnxnas.errors import OnnxNasError
from onnxnas.export import export_bytes
from onnxnas.lut.key import arch_units, block_key
from onnxnas.space import load_space
from onnxnas.space.choose import gpunet1_arch
from onnxnas.stats import arch_stats, count_stats

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "gpunet1.arch.json"
MACS = 3_308_369_280  # NVIDIA's 71/35 maps; 'same' padding everywhere gave 3,375,338,624


@pytest.fixture(scope="module")
def arch():
    return gpunet1_arch(load_space("gpunet1"))


def test_the_example_is_nvidias_gpunet1(arch) -> None:
    assert json.loads(EXAMPLE.read_text()) == arch.to_dict()
    assert load_arch(EXAMPLE) == arch and arch_from_dict(arch.to_dict()) == arch
    assert (arch.bn_eps, arch.dropout, arch.drop_path_rate) == (1e-3, 0.2, 0.2)
    assert [i for i, layer in enumerate(arch.layers) if layer.padding == "valid"] == [2, 5]


def test_maps_macs_and_parameters(arch) -> None:
    stats = arch_stats(arch)
    assert (stats["params"], stats["deployed_params"], stats["macs"]) == (12_704_192, 12_674_768, MACS)
    model = build_model(arch).eval()
    assert count_stats(model, arch.input_shape).to_dict() == {"params": 12_704_192, "macs": MACS}
    sizes, x = [], torch.zeros(arch.input_shape)
    with torch.no_grad():
        x = model.stem(x)
        for block in model.blocks:
            x = block(x)
            sizes.append(x.shape[-1])
    assert sizes == [144, 144, 71, 71, 71, 35, 35, 35, 18, 18, 18, 18, 18, 18, 18, 9, 9, 9, 9, 9, 9]
    assert [hw for _, hw in arch.layer_inputs()][1:] == sizes[:-1]


def test_bn_eps_dropout_and_drop_path_reach_the_modules(arch) -> None:
    model = build_model(arch)
    assert {m.eps for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-3}
    assert isinstance(model.head.dropout, torch.nn.Dropout) and model.head.dropout.p == 0.2
    rates = [b.drop_path_rate for b in model.blocks if hasattr(b, "drop_path_rate")]
    assert rates == pytest.approx([0.2 * j / 16 for j in range(3, 16)])  # NVIDIA: 0.2 x config index / 16


def test_drop_path_zeroes_whole_samples_in_training_only() -> None:
    torch.manual_seed(0)
    block = InvertedResidual(8, 8, 3, 1, hidden_chs=16)
    x = torch.randn(64, 8, 4, 4)
    with torch.no_grad():
        branch = block(x) - x  # training mode, rate 0 (BN on batch statistics either way)
        block.drop_path_rate = 0.5
        trained = block(x) - x
        block.eval()
        torch.testing.assert_close(block(x), block.conv_pwl(block.se(block.expand(x))) + x)  # eval: no drop
    dropped = [bool((trained[i] == 0).all()) for i in range(64)]
    assert 20 <= sum(dropped) <= 44
    kept = [i for i in range(64) if not dropped[i]]
    torch.testing.assert_close(trained[kept], 2 * branch[kept])  # the kept samples are rescaled by 1 / (1 - rate)


def test_lut_keys_carry_the_padding_only_when_it_is_not_same(arch) -> None:
    keys = [unit.key for unit in arch_units(arch, "fp16")]
    assert keys[2:6] == ["fused_irb:1x24x144x144:o64:k3:s2:pvalid:h96:se0:swish:res0:fp16",
                         "fused_irb:1x64x71x71:o64:k3:s1:h256:se0:swish:res1:fp16",
                         "fused_irb:1x64x71x71:o96:k3:s2:pvalid:h256:se0:swish:res0:fp16",
                         "fused_irb:1x96x35x35:o96:k3:s1:h384:se0:swish:res1:fp16"]
    assert sum(":pvalid:" in key for key in keys) == 2
    spec = BlockSpec("irb", 24, 64, 2, 3, "swish", hidden_chs=96, se=True)
    assert block_key(spec, 72, "fp16") == "irb:1x24x72x72:o64:k3:s2:h96:se1:swish:res0:fp16"  # unchanged


@pytest.mark.slow
def test_the_onnx_graph_has_the_same_maps_and_macs(arch) -> None:
    model = build_model(arch).eval()
    for module in model.modules():  # distinct BN statistics, so the exporter cannot share folded constants
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.bias.data.uniform_(-1, 1)
    proto = onnx.load_from_string(export_bytes(model, arch.input_shape, "fp32"))
    assert onnx_counts(proto).to_dict() == {"params": 12_674_768, "macs": MACS}
    unpadded = [n.name for n in proto.graph.node if n.op_type == "Conv"
                and {a.name: list(a.ints) for a in n.attribute}["kernel_shape"] == [3, 3]
                and {a.name: list(a.ints) for a in n.attribute}.get("pads", [0] * 4) == [0, 0, 0, 0]]
    assert len(unpadded) == 2 and all("conv_exp" in name for name in unpadded)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["layers"][2].update(padding="reflect"), "$.layers[2].padding"),
    (lambda d: d.update(bn_eps=0), "$.bn_eps"),
    (lambda d: d.update(dropout=1.5), "$.dropout"),
])
def test_bad_network_fields_are_refused(arch, mutate, message: str) -> None:
    data = arch.to_dict()
    mutate(data)
    with pytest.raises(OnnxNasError, match=message.replace("$", r"\$").replace("[", r"\[").replace("]", r"\]")):
        arch_from_dict(data)


def test_a_valid_conv_larger_than_its_input_is_refused() -> None:
    arch = load_arch(Path(__file__).resolve().parents[1] / "examples" / "tiny.arch.json").to_dict()
    for layer in arch["layers"]:
        if layer["type"] != "skip":
            layer["padding"] = "valid"
    arch["layers"][-1]["kernel_size"] = 5
    with pytest.raises(OnnxNasError, match=r"padding: a 'valid' .* input, smaller than its kernel"):
        arch_from_dict(arch)
