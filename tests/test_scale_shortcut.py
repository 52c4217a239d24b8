"""The projection residual (``shortcut: "conv1x1"``): schema, block, counts, LUT key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from onnxnas.arch import arch_from_dict
from onnxnas.blocks import build_model
from onnxnas.blocks.builder import build_block
from onnxnas.blocks.spec import BlockSpec
from onnxnas.cost import arch_counts
from onnxnas.errors import OnnxNasError
from onnxnas.lut.key import block_key
from onnxnas.stats import count_stats

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tiny.arch.json"


def projected_tiny() -> dict[str, Any]:
    """tiny with layer 4 (irb 32 -> 32, stride 1) widened to 40 through a projection shortcut."""
    data = json.loads(EXAMPLE.read_text())
    data["derived_from"] = data.pop("space")
    data["layers"][4].update(out_chs=40, shortcut="conv1x1")
    data["layers"][5] = {"type": "skip", "in_chs": 40, "out_chs": 40, "stride": 1}
    data["head"]["in_chs"] = 40
    return data


def test_shortcut_round_trips_and_counts_match_the_built_network() -> None:
    arch = arch_from_dict(projected_tiny())
    assert arch.layers[4].shortcut == "conv1x1" and arch.layers[4].has_residual
    assert arch.to_dict()["layers"][4]["shortcut"] == "conv1x1"
    assert "shortcut" not in arch.to_dict()["layers"][3]
    stats = count_stats(build_model(arch), arch.input_shape)
    counts = arch_counts(arch)
    assert (counts.params, counts.macs) == (stats.params, stats.macs) == (42704, 1902464)


def test_block_adds_the_projected_input() -> None:
    spec = BlockSpec("irb", 8, 12, 1, 3, "relu", hidden_chs=16, shortcut="conv1x1")
    block = build_block(spec).eval()
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        body = block.conv_pwl(block.se(block.expand(x)))
        assert torch.allclose(block(x), body + block.shortcut(x))
    assert sum(p.numel() for p in block.shortcut.parameters()) == 8 * 12 + 2 * 12


def test_lut_key_names_the_shortcut() -> None:
    spec = BlockSpec("irb", 8, 12, 1, 3, "relu", hidden_chs=16, shortcut="conv1x1")
    assert block_key(spec, 6, "fp32") == "irb:1x8x6x6:o12:k3:s1:h16:se0:relu:res1:sc1:fp32"
    plain = BlockSpec("irb", 8, 8, 1, 3, "relu", hidden_chs=16)
    assert block_key(plain, 6, "fp32") == "irb:1x8x6x6:o8:k3:s1:h16:se0:relu:res1:fp32"


@pytest.mark.parametrize("edit, message", [
    ({"shortcut": "conv3x3"}, "expected one of conv1x1"),
    ({"out_chs": 32, "shortcut": "conv1x1"}, "in_chs != out_chs; this is a stride-1 irb block, 32 -> 32"),
])
def test_bad_shortcut_is_one_line(edit: dict[str, Any], message: str) -> None:
    data = projected_tiny()
    data["layers"][4].update(edit)
    if data["layers"][4]["out_chs"] == 32:
        data["layers"][5].update(in_chs=32, out_chs=32)
        data["head"]["in_chs"] = 32
    with pytest.raises(OnnxNasError, match=r"\$\.layers\[4\]\.shortcut") as err:
        arch_from_dict(data)
    assert message in str(err.value)


def test_dropped_residual_names_the_shortcut_fix() -> None:
    from onnxnas.arch import check_fits_space
    from onnxnas.space import load_space
    data = projected_tiny()
    del data["layers"][4]["shortcut"]
    with pytest.raises(OnnxNasError, match="silently drop the residual add.*'shortcut': 'conv1x1'"):
        check_fits_space(arch_from_dict(data), load_space("tiny"))


def test_shortcut_bops_follow_the_homogeneous_formula() -> None:
    """A float 1x1 conv, 32 -> 40 at 4x4: MACs * (b_a b_w + b_a + b_w + log2(n k^2)) with 32-bit weights and inputs."""
    import math

    from onnxnas.cost import block_bops

    with_sc = BlockSpec("irb", 32, 40, 1, 5, "relu", hidden_chs=128, shortcut="conv1x1")
    without = BlockSpec("irb", 32, 40, 1, 5, "relu", hidden_chs=128)
    bits = ((32, 32),)
    macs = 4 * 4 * 32 * 40
    extra = block_bops(with_sc, 4, bits)[0] - block_bops(without, 4, bits)[0]
    assert extra == pytest.approx(macs * (32 * 32 + 32 + 32 + math.log2(32)), rel=1e-12)
