"""UDC's pieces against docs/design.md §7's formulas, recomputed here independently."""

from __future__ import annotations

import math

import pytest
import torch

from onnxnas.blocks import build_model
from onnxnas.compress.size import MIB
from onnxnas.cost import LatencyCost, size_report
from onnxnas.deploy.checkpoint import Checkpoint, fit_state_dict
from onnxnas.errors import OnnxNasError
from onnxnas.search.udc import schedules
from onnxnas.search.udc.config import UdcConfig
from onnxnas.search.udc.constraint import Constraint, LatencyModel, SizeModel
from onnxnas.search.udc.options import cheapest, layer_options
from onnxnas.search.udc.projection import project_, projection_temperature
from onnxnas.search.udc.repair import Configs, check_reachable, repair
from onnxnas.search.udc.sampling import accepted_average, gumbel_samples, top_kappa_ste
from onnxnas.search.udc.supernet import UdcSupernet
from onnxnas.space import load_space
from onnxnas.space.load import space_from_dict
from udc_fixtures import int8_table

TINY = load_space("tiny-udc")


def _one_hot(options, config):
    """Exact one-hot decisions of a configuration (what the argmax arch is)."""
    z = []
    for o, c in zip(options, config):
        z.append({d: torch.nn.functional.one_hot(torch.tensor(c.get(d, 0)), o.count(d)).float() for d in o.searched()})
    return z


def _config(options, width, bits, sparsity):
    """Every layer a block, at these option indices where it has them (a conv layer has one width)."""
    return [{"op": 0, "width": min(width, o.count("width") - 1), "bits": bits, "sparsity": sparsity} for o in options]


def _size_constraint(space, options, target, classes=10):
    size = SizeModel(space, options, classes)
    return Constraint("size_mib", "--target-size", "MiB", target, 0.02, size.expected_mib, size.exact_mib)


def test_schedules_follow_design_values() -> None:
    assert schedules.temperature(0.0) == pytest.approx(0.66)
    assert schedules.temperature(1.0) == pytest.approx(0.1)
    assert schedules.temperature(0.5) == pytest.approx(math.sqrt(0.66 * 0.1))
    assert schedules.xi(0.0, 4) == pytest.approx(0.1)
    assert schedules.xi(1.0, 4) == pytest.approx(0.75)
    assert schedules.xi(0.5, 10) == pytest.approx(0.1 + 0.5 * (0.9 - 0.1))
    assert schedules.theta_rs(None) == 0.0
    assert schedules.theta_rs(0.0) == 0.0
    assert schedules.theta_rs(0.5) == pytest.approx(0.25)
    assert schedules.theta_rs(1.0) == pytest.approx(0.5)


def test_projection_meets_the_bound_exactly_and_keeps_order() -> None:
    logits = torch.tensor([3.0, 1.0, 0.0, -1.0])
    t = projection_temperature(logits, 0.1)
    assert t > 1.0
    pi = torch.softmax(torch.log_softmax(logits.double(), 0) / t, 0)
    assert float(pi.max()) == pytest.approx(0.25 + 0.1, abs=1e-9)
    project_(logits, 0.1)
    assert float(torch.softmax(logits, 0).max()) == pytest.approx(0.35, abs=1e-6)
    assert logits.argsort().tolist() == [3, 2, 1, 0]


def test_projection_leaves_a_spread_pi_alone() -> None:
    logits = torch.tensor([0.1, 0.0, 0.0, 0.0])  # max pi ~0.27 <= 0.25 + 0.1
    before = logits.clone()
    assert project_(logits, 0.1) == 1.0
    assert torch.equal(logits, before)
    assert projection_temperature(torch.tensor([5.0, 0.0]), 0.5) == 1.0  # xi = 1 - 1/|pi|: free


def test_top_kappa_forward_truncates_backward_is_identity() -> None:
    z = torch.tensor([0.5, 0.3, 0.2], requires_grad=True)
    out = top_kappa_ste(z, 2)
    assert out.tolist() == pytest.approx([0.625, 0.375, 0.0])
    (out * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert z.grad.tolist() == [1.0, 2.0, 3.0]
    assert top_kappa_ste(z, 3) is z


def test_rejection_sampling_averages_the_accepted() -> None:
    samples = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1]])
    average = accepted_average(samples, torch.tensor([2.0, 0.0, 0.0]))
    assert average.tolist() == pytest.approx([0.65, 0.25, 0.1])
    assert accepted_average(samples, torch.tensor([0.0, 0.0, 1.0])) is None


def test_gumbel_samples_are_distributions_at_the_temperature() -> None:
    gen = torch.Generator().manual_seed(0)
    samples = gumbel_samples(torch.zeros(4), 0.1, 1000, gen)
    assert samples.shape == (1000, 4)
    assert torch.allclose(samples.sum(1), torch.ones(1000))
    counts = torch.bincount(samples.argmax(1), minlength=4).float() / 1000
    assert counts.min() > 0.2 and counts.max() < 0.3  # uniform pi
    assert float(samples.max(1).values.mean()) > 0.9  # a low temperature is nearly one-hot


def test_mbv2_dense_8bit_is_table_4s_3_31_mib() -> None:
    space = load_space("mbv2")
    options = layer_options(space)
    config = [{"width": o.count("width") - 1, "bits": o.bits.index(8), "sparsity": o.count("sparsity") - 1} for o in options]
    arch = Configs(space, options, 1000).arch(config)
    assert size_report(arch).total_bits == 3_469_760 * 8
    assert size_report(arch).total_mib == pytest.approx(3.309, abs=5e-4)
    z = _one_hot(options, config)
    assert float(SizeModel(space, options, 1000).expected_mib(z)) == pytest.approx(3_469_760 / MIB, rel=1e-6)


def test_expected_size_is_the_plug_in_formula() -> None:
    options = layer_options(TINY)
    model = SizeModel(TINY, options, 10)
    config = _config(options, 1, 1, 2)
    arch = Configs(TINY, options, 10).arch(config)
    z = _one_hot(options, config)
    assert float(model.expected_mib(z)) == pytest.approx(size_report(arch).total_mib, rel=1e-6)
    # layer 1 (fused_irb 16->24, hidden 16..64): mix widths 16/64 half and half, bits 2/8, s 0.25/1.0
    z[1] = {"width": torch.tensor([0.5, 0.0, 0.0, 0.5]), "bits": torch.tensor([0.5, 0.0, 0.5]),
            "sparsity": torch.tensor([0.5, 0.0, 0.0, 0.5])}
    h, b, s = 40.0, 5.0, 0.625
    n = 16 * h * 9 + h * 24  # conv_exp 3x3 + conv_pwl
    entropy = -s * math.log2(s) - (1 - s) * math.log2(1 - s)
    others = size_report(arch).total_bits - size_report(arch).layers[2].bound_bits  # rows: stem, layers.0, layers.1
    assert size_report(arch).layers[2].name == "layers.1"
    assert float(model.expected_mib(z)) * 8 * MIB == pytest.approx(others + (s * b + entropy) * n, rel=1e-6)
    z[0] = {**z[0], "op": torch.tensor([0.25, 0.75])}  # identity takes 3/4 of layer 0
    layer0 = size_report(arch).layers[1].bound_bits
    assert float(model.expected_mib(z)) * 8 * MIB == pytest.approx(others - 0.75 * layer0 + (s * b + entropy) * n, rel=1e-6)


def test_expected_latency_is_the_int8_lut_mixture() -> None:
    table = int8_table(TINY)
    options = layer_options(TINY)
    model = LatencyModel(TINY, options, table, 10)
    config = _config(options, 2, 0, 0)
    arch = Configs(TINY, options, 10).arch(config)
    z = _one_hot(options, config)
    exact = LatencyCost(table, "int8").exact(arch)
    assert float(model.expected_us(z)) == pytest.approx(exact, rel=1e-9)
    assert model.exact_us(arch) == pytest.approx(exact)
    # the formula table: block = 3 + 10 + 0.5 * hidden + 2 * k, minus the 3 us overhead inside a network
    z[5] = {**z[5], "width": torch.tensor([0.5, 0.0, 0.0, 0.5]), "op": torch.tensor([0.5, 0.5])}
    mixed = 0.5 * (10 + 0.5 * (0.5 * 32 + 0.5 * 128) + 6)
    assert float(model.expected_us(z)) == pytest.approx(exact - (10 + 0.5 * 96 + 6) + mixed, rel=1e-9)


def test_latency_needs_an_int8_table() -> None:
    with pytest.raises(OnnxNasError, match="needs a int8 latency table, this one is fp32.*--precision int8"):
        LatencyModel(TINY, layer_options(TINY), int8_table(TINY, precision="fp32"), 10)


def test_unreachable_target_names_the_minimum() -> None:
    options = layer_options(TINY)
    configs = Configs(TINY, options, 10)
    minimum = size_report(configs.arch(cheapest(options))).total_mib
    assert minimum == pytest.approx(6.3518 / 1024, rel=1e-4)
    assert configs.arch(cheapest(options)).depth == 2  # every skippable layer skipped
    with pytest.raises(OnnxNasError, match=rf"--target-size 0.0050 MiB: no configuration .* minimum it can reach is {minimum:.4f} MiB"):
        check_reachable(configs, [_size_constraint(TINY, options, 0.005)])
    check_reachable(configs, [_size_constraint(TINY, options, minimum)])


def test_space_without_compression_options_is_refused() -> None:
    data = {"name": "plain", "resolution": 32, "stem": {"out_chs": 8}, "head": {"hidden_chs": 16, "num_classes": 10},
            "stages": [{"type": "irb", "out_chs": 8, "layers": 2, "expansion": 2, "width_fractions": [0.5, 1.0]}]}
    with pytest.raises(OnnxNasError, match="offers no compression options"):
        layer_options(space_from_dict(data, "plain.yaml"))
    with pytest.raises(OnnxNasError, match="max_expansion .* UDC searches expansion x width_fractions"):
        layer_options(load_space("tiny"))


def test_repair_moves_the_best_ratio_until_the_target_holds() -> None:
    options = layer_options(TINY)
    configs = Configs(TINY, options, 10)
    start = [{"op": 0, "width": o.count("width") - 1, "bits": o.count("bits") - 1, "sparsity": o.count("sparsity") - 1}
             for o in options]
    full = size_report(configs.arch(start)).total_mib
    target = 0.6 * full
    constraint = _size_constraint(TINY, options, target)
    log_pi = [{d: torch.log_softmax(torch.zeros(o.count(d)), 0) for d in o.searched()} for o in options]
    log_pi[4]["op"] = torch.log(torch.tensor([0.999, 0.001]))  # skipping layer 4 costs 6.9 nats: never worth it here
    config, moves = repair(configs, start, log_pi, [constraint])
    final = size_report(configs.arch(config)).total_mib
    assert final <= target < size_report(configs.arch(start)).total_mib
    sizes = [full] + [m["size_mib"] for m in moves]
    assert all(a > b for a, b in zip(sizes, sizes[1:]))
    assert sizes[-2] > target  # it stops at the first configuration that fits
    assert moves[0]["decision"] == "op" and moves[0]["to"] == "skip"  # the largest saving at equal log-probability
    assert not any(m["layer"] == 4 and m["decision"] == "op" for m in moves)
    assert moves[0]["log_prob_lost"] == pytest.approx(1e-6)  # uniform pi: the floor


def test_config_validation_names_flags() -> None:
    with pytest.raises(OnnxNasError, match="needs a hard constraint"):
        UdcConfig().validate()
    with pytest.raises(OnnxNasError, match="--mc-samples 3 does not split over 2 processes"):
        UdcConfig(target_size_mib=1.0, mc_samples=3).validate(world_size=2)


def test_supernet_weights_load_into_the_found_arch() -> None:
    torch.manual_seed(0)
    net = UdcSupernet(TINY, 10)
    options = net.options
    z = [{d: torch.full((o.count(d),), 1.0 / o.count(d)) for d in o.searched()} for o in options]
    assert net(torch.randn(2, 3, 32, 32), z).shape == (2, 10)
    net.init_ranges()
    assert bool(net.ranges_ready)
    assert net(torch.randn(2, 3, 32, 32), z).shape == (2, 10)
    config = [{"op": 1 if o.count("op") > 1 else 0, "width": 1, "bits": 0, "sparsity": 0} for o in options]
    arch = Configs(TINY, options, 10).arch(config)
    state = net.deploy_state_dict([layer.type == "skip" for layer in arch.layers])
    model = build_model(arch)
    model.load_state_dict(fit_state_dict(Checkpoint(state, {}, None, "test"), arch))
    kept = arch.layers[1].hidden_chs
    assert torch.equal(model.blocks[1].conv_exp[0].weight, net.layers[1].block.conv_exp[0].weight[:kept])
