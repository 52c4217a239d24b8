"""Filter-level search (docs/design.md §12): ops, samplers, BOPs, budgets, feasibility, the quantized net."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from onnxnas.arch import arch_from_dict, check_filter_ops, load_arch
from onnxnas.compress.groups import quantize_groups
from onnxnas.cost import BopsCost
from onnxnas.errors import OnnxNasError
from onnxnas.search.filterlevel.configuration import BinomialSampler, MultinomialSampler, largest_remainder
from onnxnas.search.filterlevel.feasibility import feasible, repair
from onnxnas.search.filterlevel.ops import Op, parse_ops
from onnxnas.search.filterlevel.problem import Problem, parse_bops_budget
from onnxnas.search.filterlevel.quantnet import FilterLevelNet, quantize_activation
from onnxnas.search.filterlevel.relaxed_bops import relaxed_bops

TINY = Path(__file__).resolve().parents[1] / "examples" / "tiny.arch.json"
OPS = parse_ops("2:2,2:4,3:3,8:8")


@pytest.fixture(scope="module")
def problem() -> Problem:
    return Problem.of(load_arch(TINY), OPS, "quant", str(TINY))


def test_ops_parse_in_order() -> None:
    assert parse_ops(" 2:2, 8:8,32:32") == (Op(2, 2), Op(8, 8), Op(32, 32))


@pytest.mark.parametrize("text, message", [
    ("2:40", "activation bits 40 of op '2:40' are outside 1..32"),
    ("0:2", "weight bits 0 of op '0:2' are outside 1..32"),
    ("16:8", "weight bits 16 of op '16:8' have no deployable format"),
    ("2-2", "op '2-2' is not WEIGHT:ACT"),
    ("2:2,,8:8", "is not a comma list"),
    ("2:x", "activation bits 'x' of op '2:x' is not an integer"),
    ("2:2,2:2", "op 2:2 is given twice"),
])
def test_bad_ops_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(OnnxNasError, match="--ops") as info:
        parse_ops(text)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_initial_probabilities_follow_the_authors() -> None:
    p = torch.softmax(MultinomialSampler(OPS).initial(16), 0)
    assert torch.allclose(p, torch.tensor([2 / 7, 2 / 7, 2 / 7, 1 / 7]))


def test_largest_remainder_rounding() -> None:
    assert largest_remainder(10, [0.25, 0.25, 0.5]) == (3, 2, 5)
    assert largest_remainder(7, [0.1, 0.6, 0.3]) == (1, 4, 2)
    assert sum(largest_remainder(33, [1 / 3] * 3)) == 33


def test_score_functions_are_a_minus_expected_count() -> None:
    alpha = torch.tensor([0.0, math.log(3.0)])
    assert torch.allclose(MultinomialSampler((Op(2, 2), Op(8, 8))).score(8, alpha, (5, 3)), torch.tensor([3.0, -3.0]))
    assert torch.allclose(BinomialSampler().score(9, torch.zeros(1), (4,)), torch.tensor([-1.0]))


def test_configuration_gives_contiguous_validated_groups(problem: Problem) -> None:
    torch.manual_seed(0)
    sampler = problem.sampler
    config = tuple(sampler.sample(s.filters, sampler.initial(s.filters)) for s in problem.slots)
    arch = problem.arch_of(config)
    check_filter_ops(arch, [(o.weight_bits, o.act_bits) for o in OPS])
    again = arch_from_dict(arch.to_dict())  # arch.py's validation: every list sums to its conv's filters
    assert again == arch
    head = dict(again.head.filter_groups)["conv"]
    expected = [(c, o.weight_bits, o.act_bits) for c, o in zip(config[-1], OPS) if c]
    assert [(g.filters, g.weight_bits, g.act_bits) for g in head] == expected
    assert len(problem.slots) == 1 + 1 + 2 + 3 + 3 + 1  # stem, conv, fused_irb, irb, irb, head


def test_groups_that_do_not_sum_are_refused(problem: Problem) -> None:
    data = problem.arch_of(problem.homogeneous(0)).to_dict()
    data["layers"][1]["filter_groups"]["conv_exp"][0]["filters"] = 60
    with pytest.raises(OnnxNasError, match=r"conv_exp: groups sum to 60 filters, but conv_exp has 64"):
        arch_from_dict(data, "found.arch.json")


def test_relaxed_bops_equal_the_formula_at_one_hot(problem: Problem) -> None:
    torch.manual_seed(1)
    config = tuple(problem.sampler.sample(s.filters, torch.randn(len(OPS))) for s in problem.slots)
    mixes = []
    for counts in config:
        ops = [t for t, c in enumerate(counts) for _ in range(c)]
        mixes.append(torch.nn.functional.one_hot(torch.tensor(ops), len(OPS)).float())
    exact = BopsCost().exact(problem.arch_of(config))
    assert float(relaxed_bops(problem, mixes)) == pytest.approx(exact, rel=1e-9)
    soft = [torch.full_like(m, 0.25).requires_grad_() for m in mixes]
    relaxed_bops(problem, soft).backward()
    assert all(m.grad is not None and torch.isfinite(m.grad).all() for m in soft)


def test_budgets_absolute_relative_and_below_the_cheapest(problem: Problem) -> None:
    reference = problem.reference_bops()
    assert reference == pytest.approx(BopsCost().exact(problem.arch_of(problem.homogeneous(3))))
    assert parse_bops_budget("0.5x", problem) == pytest.approx(0.5 * reference)
    assert parse_bops_budget("6e7", problem) == 6e7
    floor = problem.bops(problem.homogeneous(0))
    with pytest.raises(OnnxNasError) as info:
        parse_bops_budget("1e6", problem)
    assert f"below the cheapest configuration (every filter at 2:2: {floor:.6g} BOPs" in str(info.value)
    with pytest.raises(OnnxNasError, match="not a positive finite number"):
        parse_bops_budget("nanx", problem)


def test_feasibility_prefers_the_best_fitting_and_repairs(problem: Problem) -> None:
    top, cheap = problem.homogeneous(3), problem.homogeneous(0)
    target = 0.5 * problem.reference_bops()
    scores = {cheap: 0.5}
    chosen, candidates = feasible(problem, top, [cheap], target, lambda c: scores.get(c, 0.1))
    assert chosen.config == cheap and chosen.source == "sampled" and chosen.val_acc == 0.5
    assert [c.val_acc for c in candidates] == [None, 0.5]  # the deterministic one is over budget
    chosen, _ = feasible(problem, top, [], target, lambda c: 0.3)
    assert chosen.source == "repaired" and chosen.bops <= target
    assert repair(problem, top, problem.bops(cheap)) == cheap  # the cheapest is reachable


def test_prune_mode_needs_inverted_residuals() -> None:
    arch = load_arch(TINY)
    convs_only = dataclasses.replace(arch, layers=arch.layers[:1], head=dataclasses.replace(arch.head, in_chs=16))
    with pytest.raises(OnnxNasError, match="--mode prune searches the hidden widths of irb / fused_irb layers"):
        Problem.of(convs_only, OPS, "prune", "convs.arch.json")
    p = Problem.of(arch, OPS, "prune", "tiny")
    assert [(s.layer, s.conv, s.filters) for s in p.slots] == [(1, "conv_exp", 64), (3, "conv_pw", 96), (4, "conv_pw", 128)]
    pruned = p.arch_of(((10,), (96,), (3,)))
    assert pruned.derived and [l.hidden_chs for l in pruned.layers if l.type != "skip"][1:] == [10, 96, 3]
    assert p.bops(((10,), (96,), (3,))) < p.reference_bops()


def test_quantized_net_uses_the_groups(problem: Problem) -> None:
    torch.manual_seed(0)
    net = FilterLevelNet(problem)
    x = torch.randn(4, 3, 32, 32)
    net.init_ranges(x)
    config = problem.homogeneous(0)
    config = (((6, 4, 0, 6)),) + config[1:]  # stem: 6@2:2, 4@2:4, 6@8:8
    net.set_configuration(config)
    conv = net.convs[0]
    assert torch.equal(conv.quantized_weight(), quantize_groups(conv.weight, [(6, 0), (4, 1), (6, 3)], conv.ranges))
    out = {}
    net.net.stem.register_forward_hook(lambda m, i, o: out.setdefault("stem", o))
    net.eval()
    net(x)
    stem = out["stem"]  # swish: signed grid; 2 bits -> {-r, 0, r}, 4 bits -> 15 levels
    assert len(torch.unique(stem[:, :6])) <= 3 and len(torch.unique(stem[:, 6:10])) <= 15
    assert net.deploy_state_dict().keys() == load_state_keys(problem)


def load_state_keys(problem: Problem) -> set[str]:
    from onnxnas.blocks import build_model

    return build_model(problem.arch).state_dict().keys()


def test_unsigned_activation_grid() -> None:
    x = torch.linspace(-1, 3, 101)
    q = quantize_activation(x, 2, torch.tensor(3.0), signed=False)
    assert sorted(torch.unique(q).tolist()) == [0.0, 1.0, 2.0, 3.0]


def test_learned_ranges_never_cross_zero(problem: Problem) -> None:
    """A range pushed below zero (a negative weight grid, once seen in a 0.5x digits search) is clamped after
    the step, so the checkpoint's quant_ranges stay deployable."""
    from onnxnas.data import synthetic
    from onnxnas.search.distributed import init_distributed
    from onnxnas.search.filterlevel.config import FilterLevelConfig
    from onnxnas.search.filterlevel.quantnet import MIN_RANGE
    from onnxnas.search.filterlevel.trainer import FilterLevelTrainer

    cfg = FilterLevelConfig(target_bops=problem.reference_bops(), epochs=2, pretrain_epochs=0, max_batches=2,
                            batch_size=8)
    cpu = torch.device("cpu")
    trainer = FilterLevelTrainer(cfg, problem, synthetic(32, 3, samples=64).train, init_distributed(cpu), cpu)
    trainer.run_epoch()  # sets the ranges from the weights
    with torch.no_grad():
        trainer.net.convs[0].ranges.ranges.fill_(-0.5)
        trainer.net.acts[0].ranges.fill_(-0.5)
    trainer.run_epoch()
    for ranges in (trainer.net.convs[0].ranges.ranges, trainer.net.acts[0].ranges):  # -0.5 moves by ~lr per step
        assert MIN_RANGE * (1 - 1e-6) <= float(ranges.detach().min()) and float(ranges.detach().max()) < 0.01
    ranges, _ = trainer.net.trained_grids(trainer.deterministic())
    assert min(min(r) for r in ranges.values()) >= MIN_RANGE * (1 - 1e-6)
