"""Prunode: the mask algorithm against hand-computed widths, and its masked paths against sliced blocks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from onnxnas.blocks import build_block
from onnxnas.blocks.spec import BlockSpec
from onnxnas.search.prunode import Prunode, PrunodeMasks, prefix_mask, round_to


def test_round_to_rounds_halves_up() -> None:
    assert [round_to(v, 16) for v in (7.9, 8.0, 24.0, 33.28, 143.36)] == [0, 16, 32, 32, 144]


def test_mask_updates_match_hand_computed_widths() -> None:
    m = PrunodeMasks(max_channels=128, granularity=16)
    assert (m.small, m.large) == (64, 128)  # s = 0.5, l = 1.0

    # update = 0.1; distance 0.6; s = min(0.6, 1 - 0.8 * 0.6) = 0.52; l = 1.12
    assert m.step(0.1, progress=0.0) is True
    assert (m.s, m.l) == pytest.approx((0.52, 1.12))
    assert (m.small, m.large) == (64, 128)  # 66.56 -> 64; 143.36 -> 144, clipped to 128

    # update = 0.1 * 0.4 - 0.3 = -0.26; distance 0.6 * 0.5^2 = 0.15; s = 0.26; l = 0.41
    assert m.step(-0.3, progress=0.5) is True
    assert (m.s, m.l, m.update) == pytest.approx((0.26, 0.41, -0.26))
    assert (m.small, m.large) == (32, 48)  # 33.28 -> 32; 52.48 -> 48

    # update = -0.26 * 0.4 - 0.5 = -0.604; s would be negative: clamped to 0, weight kept
    assert m.step(-0.5, progress=0.6) is False
    assert (m.s, m.l) == pytest.approx((0.0, 0.096))
    assert (m.small, m.large) == (16, 32)  # small clipped up to 16; large to small + 16

    # (l - s) * 128 = 12.3 <= 16: adjacent, no further moves
    assert m.converged
    assert m.step(5.0, progress=0.7) is False
    assert (m.small, m.large) == (16, 32)


def test_positive_weights_move_both_masks_up_to_the_cap() -> None:
    m = PrunodeMasks(max_channels=64, granularity=16)
    widths = []
    for progress in (0.1, 0.3, 0.5):
        m.step(1.0, progress)
        widths.append((m.small, m.large))
    # s is capped at 1 - c * distance: 0.6112 (x64 = 39.1 -> 32), 0.7648 (48.9 -> 48), 0.88 (56.3 -> 64, clipped to 48)
    assert widths == [(32, 64), (48, 64), (48, 64)]
    assert m.s == pytest.approx(0.88)


def test_state_round_trips() -> None:
    m = PrunodeMasks(max_channels=96, granularity=16)
    m.step(-0.2, 0.3)
    other = PrunodeMasks(max_channels=96, granularity=16)
    other.load_state(m.state())
    assert other.state() == m.state()


def _sliced(spec: BlockSpec, block: torch.nn.Module, width: int) -> torch.nn.Module:
    """The block finalize builds: hidden width ``width``, the first ``width`` hidden channels kept."""
    small_spec = BlockSpec(**{**spec.__dict__, "hidden_chs": width})
    small = build_block(small_spec)
    state = {}
    for key, value in block.state_dict().items():
        target = small.state_dict()[key]
        index = tuple(slice(0, n) for n in target.shape)
        state[key] = value[index] if value.dim() else value
    small.load_state_dict(state)
    return small


@pytest.mark.parametrize("kind,se", [("irb", True), ("fused_irb", False)])
def test_masked_path_equals_sliced_block(kind: str, se: bool) -> None:
    spec = BlockSpec(kind, 24, 24, 1, 3, "relu", hidden_chs=96, se=se)
    block = build_block(spec)
    for module in block.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    block.eval()
    x = torch.randn(2, 24, 8, 8)
    block.hidden_mask = prefix_mask(48, 96, x)
    masked = block(x)
    block.hidden_mask = None
    assert torch.allclose(masked, _sliced(spec, block, 48).eval()(x), atol=1e-5)


def test_prunode_output_and_latency_are_the_gumbel_mix_of_its_two_paths() -> None:
    spec = BlockSpec("irb", 16, 16, 1, 3, "relu", hidden_chs=64)
    prices = {16: 10.0, 32: 20.0, 48: 35.0, 64: 50.0}
    node = Prunode(build_block(spec), PrunodeMasks(64, 16), prices.__getitem__).eval()
    with torch.no_grad():
        node.theta.fill_(0.7)
    x = torch.randn(2, 16, 8, 8)
    torch.manual_seed(3)
    out, latency = node(x, tau=1.0)
    torch.manual_seed(3)
    gate = F.gumbel_softmax(torch.tensor([0.0, 0.7]), tau=1.0)
    assert (node.masks.small, node.masks.large) == (32, 64)
    assert latency.item() == pytest.approx(gate[0].item() * 20.0 + gate[1].item() * 50.0, rel=1e-6)
    paths = []
    for width in (32, 64):
        node.block.hidden_mask = prefix_mask(width, 64, x)
        paths.append(node.block(x))
    node.block.hidden_mask = None
    assert torch.allclose(out, gate[0] * paths[0] + gate[1] * paths[1], atol=1e-6)


def test_update_masks_consumes_the_architecture_weight() -> None:
    node = Prunode(build_block(BlockSpec("irb", 16, 16, 1, 3, "relu", hidden_chs=64)), PrunodeMasks(64, 16), float)
    with torch.no_grad():
        node.theta.fill_(-0.2)
    node.update_masks(progress=0.0)
    assert node.theta.item() == 0.0
    assert node.masks.s == pytest.approx(0.3)
    assert node.chosen_width() == node.masks.small
