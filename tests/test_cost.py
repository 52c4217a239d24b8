"""The Cost protocol: docs/design.md §12's worked BOPs values, counts equal to the built network, the size bound,
LUT latency with precision checks, expected values, PruNet's latency term unchanged, budgets."""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from onnxnas.arch import load_arch
from onnxnas.blocks.builder import build_model
from onnxnas.blocks.spec import ConvShape, FilterGroup
from onnxnas.cost import (BUDGET_KINDS, BopsCost, Budget, CountCost, LatencyCost, Mixture, Placed, RelaxedArch, SizeCost,
                          arch_counts, block_bops, conv_bops, make_cost, parse_budget)
from onnxnas.errors import OnnxNasError
from onnxnas.export import export_bytes
from onnxnas.search.latency import SpaceLatency
from onnxnas.search.prunode import Prunode
from onnxnas.search.skipping import SkipCandidate, insert_skip
from onnxnas.search.supernet import Supernet
from onnxnas.space import load_space
from onnxnas.space.choose import make_arch, random_arch
from onnxnas.stats import count_stats
from search_fixtures import synthetic_table

G = FilterGroup
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CONV_16_32 = ConvShape("conv", 16, 32, 3)


# ---- BOPs ------------------------------------------------------------------------------
def test_bops_worked_values_of_design_section_12() -> None:
    assert conv_bops(CONV_16_32, 16, ((16, 4),), (G(32, 4, 4),)) == pytest.approx(36_769_539.69, abs=0.01)
    mixed = (G(8, 2, 2), G(8, 2, 4), G(16, 8, 8))
    assert conv_bops(CONV_16_32, 16, ((16, 4),), mixed) == pytest.approx(42_667_779.69, abs=0.01)
    following = ConvShape("conv", 32, 32, 3)
    assert conv_bops(following, 16, ((8, 2), (8, 4), (16, 8)), (G(32, 4, 4),)) == pytest.approx(97_262_467.01, abs=0.01)
    depthwise = ConvShape("conv_dw", 32, 32, 3, groups=32)
    assert conv_bops(depthwise, 16, ((32, 8),), (G(32, 8, 8),)) == pytest.approx(6_131_952.23, abs=0.01)


@pytest.mark.parametrize("conv, hw, b_a, b_w", [(CONV_16_32, 16, 4, 4), (ConvShape("c", 24, 40, 5, groups=8), 7, 8, 2),
                                                (ConvShape("c", 96, 96, 3, groups=96), 12, 3, 6)])
def test_bops_of_a_homogeneous_conv_is_macs_times_the_bit_factor(conv: ConvShape, hw: int, b_a: int, b_w: int) -> None:
    n = conv.in_chs // conv.groups
    macs = hw * hw * conv.weights
    expected = macs * (b_a * b_w + b_a + b_w + math.log2(n * conv.kernel_size ** 2))
    assert conv_bops(conv, hw, ((conv.in_chs, b_a),), (G(conv.out_chs, b_w, 8),)) == pytest.approx(expected, rel=1e-12)


def test_bops_thread_activation_bits_through_se_and_the_residual_add() -> None:
    space = load_space("tiny")
    arch = make_arch(space, [{"kernel_size": 3}] + [{"kernel_size": 3, "se": True, "hidden_chs": 32}] * 5)
    layer4 = arch.layers[4]  # irb 32->32, stride 1: SE and a residual add
    groups = (("conv_pwl", (G(16, 8, 2), G(16, 8, 6))),)
    quantized = dataclasses.replace(arch, layers=(*arch.layers[:4], dataclasses.replace(layer4, filter_groups=groups),
                                                  arch.layers[5]))
    in_hw = arch.layer_inputs()[5][1]
    # the next layer's conv_pw reads the add's output, which carries conv_pwl's bits (SE gating keeps them)
    _, bits_in = block_bops(arch.layers[4], in_hw, ((32, 32),))
    before = conv_bops(ConvShape("conv_pw", 32, 32), in_hw, bits_in, (G(32, 32, 32),))
    after = conv_bops(ConvShape("conv_pw", 32, 32), in_hw, ((16, 2), (16, 6)), (G(32, 32, 32),))
    pwl_before = conv_bops(ConvShape("conv_pwl", 32, 32), in_hw, ((32, 32),), (G(32, 32, 32),))
    pwl_after = conv_bops(ConvShape("conv_pwl", 32, 32), in_hw, ((32, 32),), groups[0][1])
    delta = BopsCost().exact(quantized) - BopsCost().exact(arch)
    assert delta == pytest.approx((after - before) + (pwl_after - pwl_before), rel=1e-9)


# ---- params and MACs -------------------------------------------------------------------
@pytest.mark.parametrize("space_name, seed", [("tiny", 0), ("tiny", 1), ("tiny", 2), ("mbv2", 0)])
def test_counts_equal_the_built_network(space_name: str, seed: int) -> None:
    arch = random_arch(load_space(space_name), random.Random(seed))
    stats = count_stats(build_model(arch), arch.input_shape)
    assert (CountCost("params").exact(arch), CountCost("macs").exact(arch)) == (stats.params, stats.macs)


def test_deployed_params_are_what_the_onnx_file_holds() -> None:
    arch = load_arch(EXAMPLES / "tiny.arch.json")
    model = build_model(arch).eval()
    for module in model.modules():  # distinct BN statistics, so the exporter cannot share folded constants
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-1, 1)
    graph = onnx.load_from_string(export_bytes(model, arch.input_shape, "fp32")).graph
    held = sum(int(np.prod(t.dims)) for t in graph.initializer)
    counts = arch_counts(arch)
    assert CountCost("deployed-params").exact(arch) == counts.deployed_params == held == 38_520
    assert counts.params == 39_280 and 1 - held / counts.params == pytest.approx(0.0193, abs=1e-4)


# ---- compressed size ---------------------------------------------------------------------
def test_dense_8bit_mobilenetv2_is_3_309_mib() -> None:
    arch = load_arch(EXAMPLES / "mbv2-int8.arch.json")
    size = SizeCost()
    assert size.num_weights(arch) == 3_469_760
    assert size.exact(arch) == pytest.approx(3_469_760 * 8 / 2**23) and round(size.exact(arch), 3) == 3.309


def test_size_bound_charges_pruned_zeros_only_their_mask_entropy() -> None:
    arch = load_arch(EXAMPLES / "mbv2-int8.arch.json")
    layer = arch.layers[1]  # irb 16->24 h96 k3: 16*96 + 96*9 + 96*24 weights
    n = 16 * 96 + 96 * 9 + 96 * 24
    sparse = dataclasses.replace(arch, layers=(arch.layers[0], dataclasses.replace(layer, weight_bits=4, nonzero_fraction=0.5),
                                               *arch.layers[2:]))
    saved_bits = (SizeCost().exact(arch) - SizeCost().exact(sparse)) * 2**23
    assert saved_bits == pytest.approx(n * 8 - n * (0.5 * 4 + 1.0))  # H(0.5) = 1 bit per element


# ---- LUT latency -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    return load_space("tiny")


def test_latency_is_the_calibrated_table_prediction(tiny) -> None:
    table = synthetic_table(tiny)
    cost = LatencyCost(table)
    for seed in range(3):
        arch = random_arch(tiny, random.Random(seed))
        assert cost.exact(arch) == table.arch_latency(arch)
        assert float(cost.expected(RelaxedArch.of(arch))) == pytest.approx(table.arch_latency(arch), rel=1e-6)


def test_a_lookup_of_the_wrong_precision_names_the_build_command(tiny) -> None:
    fp32 = synthetic_table(tiny)
    arch = random_arch(tiny, random.Random(0))
    int8_arch = dataclasses.replace(arch, layers=tuple(dataclasses.replace(l, weight_bits=8) if l.type != "skip" else l
                                                       for l in arch.layers))
    with pytest.raises(OnnxNasError, match=r"a int8 arch needs a int8 latency table, this one is fp32 -- fix: build one "
                                           r"with: onnxnas build-lut --device test --space tiny --backend formula --precision int8"):
        LatencyCost(fp32).exact(int8_arch)
    int8 = synthetic_table(tiny)
    int8.header["precision"] = "int8"
    with pytest.raises(OnnxNasError, match="a fp32 arch needs a fp32 latency table, this one is int8.*--precision fp32"):
        LatencyCost(int8).exact(arch)
    with pytest.raises(OnnxNasError, match="a int8 lookup needs a int8 latency table, this one is fp32.*--precision int8"):
        LatencyCost(fp32, precision="int8")


# ---- expected values -------------------------------------------------------------------
def test_expected_cost_is_differentiable_and_one_hot_gives_the_exact_cost(tiny) -> None:
    a, b = random_arch(tiny, random.Random(3)), random_arch(tiny, random.Random(4))
    theta = torch.zeros(len(a.layers), 2, requires_grad=True)
    weights = torch.softmax(theta, 1)
    relaxed = RelaxedArch(a.resolution, a.stem, tuple(Mixture(weights[i], (Placed(x, hw), Placed(y, hw_b)))
                                                     for i, ((x, hw), (y, hw_b)) in enumerate(zip(a.layer_inputs(), b.layer_inputs()))),
                          a.head)
    for cost in (CountCost("params"), CountCost("macs"), SizeCost(), LatencyCost(synthetic_table(tiny))):
        value = cost.expected(relaxed)
        per_layer = [(cost.exact(dataclasses.replace(a, layers=(*a.layers[:i], b.layers[i], *a.layers[i + 1:]))) - cost.exact(a))
                     for i in range(len(a.layers))]
        grad = torch.autograd.grad(value, theta, retain_graph=True)[0]
        assert grad[:, 1].tolist() == pytest.approx([d / 4 for d in per_layer], rel=1e-4, abs=1e-6)  # d/dtheta of softmax at 0
        assert float(cost.expected(RelaxedArch.of(a))) == pytest.approx(cost.exact(a), rel=1e-6)
    assert float(BopsCost().expected(RelaxedArch.of(a))) == pytest.approx(BopsCost().exact(a), rel=1e-6)  # float32, like every expected value


def _recorded_relaxation(supernet: Supernet, samples: list[torch.Tensor]) -> RelaxedArch:
    """The supernet's decisions as a Mixture tree, from the Gumbel samples its forward drew (in draw order)."""
    draws = iter(samples)
    layers = []
    for layer in supernet.layers:
        pos = layer.position

        def node(slot: int) -> Placed | Mixture:
            cand, spec = layer.candidate(slot), layer.specs[slot]
            if isinstance(cand, SkipCandidate):
                return Placed(pos.skip(), pos.in_hw)
            if isinstance(cand, Prunode):
                gate = next(draws)
                return Mixture(gate, tuple(Placed(pos.block(kernel_size=spec.kernel_size, se=spec.se, hidden_chs=w), pos.in_hw)
                                           for w in (cand.masks.small, cand.masks.large)))
            return Placed(spec, pos.in_hw)

        if len(layer.alive) == 1:
            layers.append(node(layer.alive[0]))
        else:
            weights = next(draws)
            layers.append(Mixture(weights, tuple(node(s) for s in layer.alive)))
    space = supernet.space
    return RelaxedArch(space.resolution, space.stem_block(), tuple(layers), space.head_spec(10))


def test_prunet_latency_term_equals_the_cost_protocol_exactly(tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    latency = SpaceLatency(synthetic_table(tiny), tiny, 10)
    supernet = Supernet(tiny, latency, 10)
    with torch.no_grad():
        for param in supernet.arch_parameters():
            param.normal_()
    del supernet.layers[2].candidates["3"]  # a pruned slot
    insert_skip(supernet.layers[4], 1)  # a skip
    next(supernet.prunodes()).masks.step(-0.3, 0.4)  # a Prunode that moved its masks
    samples: list[torch.Tensor] = []
    original = F.gumbel_softmax

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        samples.append(out)
        return out

    monkeypatch.setattr(F, "gumbel_softmax", recording)
    _, lat = supernet(torch.zeros(2, 3, 32, 32), 1.0)
    assert len(samples) == 6 + (4 + 3 + 4 + 3 + 4)  # one draw per layer, one gate per live Prunode
    expected = latency.cost.expected(_recorded_relaxation(supernet, samples))
    assert lat.dtype == expected.dtype and torch.equal(lat, expected)


# ---- budgets -----------------------------------------------------------------------------
@pytest.mark.parametrize("text, kind, limit", [("params=30000", "params", 30000), ("macs=2e6", "macs", 2e6),
                                               ("latency-us=800", "latency-us", 800), ("size=1.0MiB", "size", 1.0),
                                               ("size=512KiB", "size", 0.5), ("bops=3.2e9", "bops", 3.2e9)])
def test_budgets_parse(text: str, kind: str, limit: float) -> None:
    assert parse_budget(text) == Budget(kind, limit)


def test_budget_errors_are_one_line(tiny) -> None:
    with pytest.raises(OnnxNasError, match=r"--budget: unknown budget kind 'flops' -- fix: use one of: "
                                           + ", ".join(BUDGET_KINDS)) as info:
        parse_budget("flops=3e9")
    assert "\n" not in str(info.value)
    with pytest.raises(OnnxNasError, match=r"--target-size: budget 'size=1MB': expected a positive finite number"):
        parse_budget("size=1MB", where="--target-size")
    with pytest.raises(OnnxNasError, match="is not KIND=VALUE"):
        parse_budget("30000")
    with pytest.raises(OnnxNasError, match="a latency budget needs a latency table -- fix: pass --lut FILE"):
        make_cost("latency-us")
    assert parse_budget("params=40000").cost().exact(load_arch(EXAMPLES / "tiny.arch.json")) == 39_280
