"""onnxnas.compress: quantizer, masks, number format, quant-noise, filter groups and the size bound, on values."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from onnxnas.arch import load_arch
from onnxnas.compress.groups import group_integers, quantize_groups
from onnxnas.compress.masks import RefreshedMasks, cubic_nonzero_fraction, kept_channels, magnitude_mask, width_mask
from onnxnas.compress.number_format import largest_pruned, shifted_quantize
from onnxnas.compress.quant_noise import quant_noise
from onnxnas.compress.quantizer import LearnedRanges, integers, max_level, mse_range, quantize
from onnxnas.compress.size import MIB, binary_entropy, bits_to_mib, bound_bits
from onnxnas.cost import size_report
from onnxnas.space import load_space
from onnxnas.space.choose import make_arch

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


# --- quantizer -------------------------------------------------------------------------------------

def test_quantize_values_on_the_grid():
    theta = torch.tensor([-2.0, -0.74, -0.1, 0.0, 0.26, 0.5, 0.9, 3.0])
    r = torch.tensor(1.0)
    # b = 2: d = 1, levels {-1, 0, 1}; b = 3: d = 1/3
    assert quantize(theta, 2, r).tolist() == [-1.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    assert torch.allclose(quantize(theta, 3, r), torch.tensor([-3, -2, 0, 0, 1, 2, 3, 3]) / 3.0)
    assert quantize(theta, 1, torch.tensor(0.5)).tolist() == [-0.5, -0.5, -0.5, 0.0, 0.5, 0.5, 0.5, 0.5]
    assert quantize(theta, 32, r) is theta
    assert integers(theta, 3, r).tolist() == [-3, -2, 0, 0, 1, 2, 3, 3]
    assert [max_level(b) for b in (1, 2, 4, 8)] == [1, 1, 7, 127]


def test_quantize_gradients_straight_through_and_lsq_range():
    theta = torch.tensor([-2.0, 0.3, 0.6, 2.0], requires_grad=True)
    r = torch.tensor(1.0, requires_grad=True)
    quantize(theta, 3, r).sum().backward()
    assert theta.grad.tolist() == [0.0, 1.0, 1.0, 0.0]  # STE inside the range, clipped outside
    # dQ/dr: clipped elements give +-1; inside, (round(x/d) - x/d) / qmax with qmax = 3
    inside = sum((round(t * 3) - t * 3) / 3 for t in (0.3, 0.6))
    assert r.grad.item() == pytest.approx(-1.0 + 1.0 + inside)
    theta.grad = None
    r1 = torch.tensor(0.5, requires_grad=True)
    quantize(theta, 1, r1).sum().backward()
    assert theta.grad.tolist() == [0.0, 1.0, 0.0, 0.0]
    assert r1.grad.item() == 2.0  # dQ/dr = sign(theta), summed


def test_learned_ranges_init_and_gradient_scale():
    torch.manual_seed(0)
    theta = torch.randn(4096)
    ranges = LearnedRanges((1, 2, 8, 32))
    ranges.init_from(theta)
    r1, r2, r8, r32 = ranges.ranges.tolist()
    top = theta.abs().max().item()
    assert r1 == pytest.approx(theta.abs().mean().item(), rel=1e-6)
    assert r32 == pytest.approx(top)
    assert 0.2 * top < r2 < r8 <= top  # fewer levels: a tighter MSE-optimal range
    error = lambda r: float((quantize(theta, 2, torch.tensor(r)) - theta).square().sum())
    assert error(r2) <= min(error(top), error(0.5 * r2), error(1.5 * r2))
    ranges.quantize(theta, 1).sum().backward()  # option 1 is the 2-bit one
    plain = torch.tensor(r2, requires_grad=True)
    quantize(theta, 2, plain).sum().backward()
    assert ranges.ranges.grad[1].item() == pytest.approx(plain.grad.item() / math.sqrt(4096 * 1), rel=1e-5)
    assert ranges.ranges.grad[[0, 2, 3]].abs().sum().item() == 0.0
    assert mse_range(torch.zeros(3), 4) == 1.0
    with pytest.raises(ValueError, match="1..8 bits"):
        LearnedRanges((16,))


# --- masks -----------------------------------------------------------------------------------------

def test_magnitude_mask_keeps_largest_fraction():
    theta = torch.tensor([[0.1, -0.9], [0.5, -0.3], [0.05, 0.7]])
    assert magnitude_mask(theta, 0.5).tolist() == [[0, 1], [1, 0], [0, 1]]
    assert magnitude_mask(theta, 1.0).sum().item() == 6
    assert magnitude_mask(theta, 0.0).sum().item() == 0
    assert magnitude_mask(torch.randn(1000), 0.3).sum().item() == 300


def test_refreshed_masks_every_16_steps():
    theta = torch.tensor([1.0, 2.0, 3.0, 4.0])
    masks = RefreshedMasks(every=16)
    first = masks(theta, (0.25, 0.5))
    assert [m.tolist() for m in first] == [[0, 0, 0, 1], [0, 0, 1, 1]]
    flipped = theta.flip(0)
    for _ in range(15):
        assert masks(flipped, (0.25, 0.5)) is first  # steps 1..15 keep the masks
    assert masks(flipped, (0.25, 0.5))[0].tolist() == [1, 0, 0, 0]  # step 16 refreshes


def test_cubic_schedule_and_width_mask():
    assert cubic_nonzero_fraction(0, 100, 0.2) == 1.0
    assert cubic_nonzero_fraction(50, 100, 0.2) == pytest.approx(0.2 + 0.8 * 0.125)
    assert cubic_nonzero_fraction(100, 100, 0.2) == 0.2
    assert cubic_nonzero_fraction(500, 100, 0.2) == 0.2
    assert width_mask(10, 0.3).tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    # mbv2's rounding: 144 hidden channels at rho 0.1 -> 16 (granularity 8), at 0.5 -> 72
    assert [kept_channels(144, rho, 8) for rho in (0.1, 0.5, 1.0)] == [16, 72, 144]


# --- number format and quant-noise -----------------------------------------------------------------

def test_shifted_quantize_spends_the_grid_above_beta():
    theta = torch.tensor([-1.0, -0.45, -0.1, 0.05, 0.4, 0.8])
    mask = magnitude_mask(theta, 0.5)
    beta = largest_pruned(theta, mask)
    assert beta.item() == pytest.approx(0.4)
    r = torch.tensor(0.6)
    out = shifted_quantize(theta, 3, r, beta)  # Q(theta -+ 0.4, 3, 0.6) +- 0.4, d = 0.2
    assert mask.tolist() == [1, 1, 0, 0, 0, 1]
    assert torch.allclose(out * mask, torch.tensor([-1.0, -0.4, 0.0, 0.0, 0.0, 0.8]))  # kept values start at beta
    assert torch.allclose(quantize(theta, 3, r) * mask, torch.tensor([-0.6, -0.4, 0.0, 0.0, 0.0, 0.6]))
    assert torch.equal(shifted_quantize(theta, 1, r, beta), quantize(theta, 1, r))
    assert largest_pruned(theta, torch.ones(6)).item() == 0.0


def test_quant_noise_mixes_quantized_and_clipped():
    theta = torch.linspace(-2, 2, 10000)
    r = torch.tensor(1.0)
    q = quantize(theta, 2, r)
    out = quant_noise(theta, q, r, 0.25, training=True, generator=torch.Generator().manual_seed(0))
    clipped = theta.clamp(-1, 1)
    from_q = (out == q) & (q != clipped)
    from_clip = (out == clipped) & (q != clipped)
    assert bool((from_q | from_clip | (q == clipped)).all())
    assert from_q.sum().item() / (q != clipped).sum().item() == pytest.approx(0.25, abs=0.02)
    assert quant_noise(theta, q, r, 0.25, training=False) is q
    with pytest.raises(ValueError, match="alpha"):
        quant_noise(theta, q, r, 1.5, training=True)


# --- filter groups ---------------------------------------------------------------------------------

def test_filter_groups_each_on_its_own_grid_and_range():
    torch.manual_seed(1)
    weight = torch.randn(8, 4, 3, 3)
    ranges = LearnedRanges((2, 4, 8, 4))  # ops 1 and 3 share 4-bit weights, not their range
    ranges.init_from(weight)
    with torch.no_grad():
        ranges.ranges[3] = 0.5
    groups = [(2, 0), (3, 1), (1, 3), (2, 2)]
    fake = quantize_groups(weight, groups, ranges)
    ints, scales = group_integers(weight, groups, ranges)
    assert ints.dtype == torch.int8
    for (lo, hi), bits in zip([(0, 2), (2, 5), (5, 6), (6, 8)], (2, 4, 4, 8)):
        assert ints[lo:hi].abs().max().item() <= 2 ** (bits - 1) - 1
    assert ints[5].abs().max().item() == 7  # range 0.5 clips a randn filter
    assert scales[5].item() == pytest.approx(0.5 / 7)
    assert torch.allclose(ints.float() * scales.view(-1, 1, 1, 1), fake, atol=1e-6)
    fake.sum().backward()
    assert (ranges.ranges.grad != 0).all()
    with pytest.raises(ValueError, match="split the conv's 8 filters"):
        quantize_groups(weight, [(3, 0)], ranges)


# --- size bound ------------------------------------------------------------------------------------

def test_bound_formula():
    assert binary_entropy(0.0) == binary_entropy(1.0) == 0.0
    assert binary_entropy(0.5) == 1.0
    assert binary_entropy(0.1) == pytest.approx(0.4689955935892812)
    assert bound_bits(1000, 8, 1.0) == 8000.0
    assert bound_bits(1000, 4, 0.5) == pytest.approx(1000 * (2 + 1))
    assert bound_bits(10, 32, 1.0) == 320.0
    assert bits_to_mib(8 * MIB) == 1.0


def test_dense_int8_mobilenetv2_is_3_309_mib():
    arch = load_arch(EXAMPLES / "mbv2-int8.arch.json")
    space = load_space("mbv2")
    built = make_arch(space, [{"kernel_size": 3, "hidden_chs": p.max_hidden, "weight_bits": 8} for p in space.positions()])
    assert built.layers == arch.layers and built.head == arch.head
    report = size_report(arch)
    assert sum(layer.num_weights for layer in report.layers) == 3_469_760
    assert round(report.total_mib, 3) == 3.309
    names = [layer.name for layer in report.layers]
    assert names[:2] == ["stem", "layers.0"] and names[-2:] == ["head", "classifier"]
    assert report.layers[0].num_weights == 32 * 3 * 3 * 3
    assert report.layers[-1].num_weights == 1280 * 1000


def test_arch_size_counts_se_widths_bits_and_sparsity():
    arch = load_arch(EXAMPLES / "tiny.arch.json")
    report = size_report(arch)
    assert [layer.name for layer in report.layers] == ["stem", "layers.0", "layers.1", "layers.3", "layers.4", "head", "classifier"]
    se_irb = report.layers[3]  # irb 24->32, hidden 96, k3, SE 96->6->96
    assert se_irb.num_weights == 24 * 96 + 96 * 9 + 96 * 6 * 2 + 96 * 32
    assert se_irb.bits == 32 and se_irb.bound_bits == 32 * se_irb.num_weights
    layers = list(arch.layers)
    layers[3] = dataclasses.replace(layers[3], weight_bits=4, nonzero_fraction=0.5)
    sparse = size_report(dataclasses.replace(arch, layers=tuple(layers))).layers[3]
    assert sparse.bound_bits == pytest.approx(3.0 * se_irb.num_weights)
    assert report.layers[0].bits == 8 and report.total_bits == sum(l.bound_bits for l in report.layers)
