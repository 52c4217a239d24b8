"""Supernet latency math, schedules, block pruning and layer skipping, checked against hand-computed values."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from onnxnas.search.latency import SpaceLatency
from onnxnas.search.pruning import prune, prune_layer
from onnxnas.search.prunode import Prunode
from onnxnas.search.schedules import cosine, prune_threshold, search_progress
from onnxnas.search.skipping import SkipCandidate, skip_multipliers
from onnxnas.search.supernet import FixedCandidate, Supernet, candidate_count
from onnxnas.space import load_space
from onnxnas.space.choose import make_arch, random_arch
from search_fixtures import OVERHEAD_US, formula_latency, synthetic_table


@pytest.fixture(scope="module")
def space():
    return load_space("tiny")


@pytest.fixture
def supernet(space) -> Supernet:
    torch.manual_seed(0)
    return Supernet(space, SpaceLatency(synthetic_table(space), space, 10), 10)


def test_layers_hold_one_prunode_per_kernel_and_se(supernet: Supernet, space) -> None:
    kinds = [[type(c).__name__ for c in layer.candidates.values()] for layer in supernet.layers]
    assert kinds[0] == ["FixedCandidate"] * 2  # conv stage: one block per kernel
    assert all(k == ["Prunode"] * 4 for k in kinds[1:])  # (k3, k5) x (SE off, on)
    assert [candidate_count(p, space.granularity) for p in space.positions()] == [2, 4, 4, 4, 4, 4]
    assert supernet.layers[4].theta.tolist() == [0.25] * 4  # architecture weights start at 1/N


def test_fixed_latency_adds_the_call_overhead_once(space) -> None:
    latency = SpaceLatency(synthetic_table(space), space, 10)
    # stem conv 3->16 k3: 3 + 10 + 0.5 * 16 + 2 * 3 = 27; head: 3 + 20 = 23; each net of the overhead, + one overhead
    assert latency.fixed() == pytest.approx(OVERHEAD_US + (27 - OVERHEAD_US) + (23 - OVERHEAD_US))


def test_discrete_arch_latency_matches_the_table(space) -> None:
    table = synthetic_table(space)
    latency = SpaceLatency(table, space, 10)
    rng = random.Random(1)
    for _ in range(5):
        arch = random_arch(space, rng)
        by_layers = latency.fixed() + sum(latency.block(layer, hw) for layer, hw in arch.layer_inputs())
        by_hand = sum(formula_latency(s) for s in [arch.stem, *(l for l in arch.layers if l.type != "skip")]) \
            + formula_latency(arch.head) - (arch.depth + 1) * OVERHEAD_US
        assert by_layers == pytest.approx(table.arch_latency(arch))
        assert by_layers == pytest.approx(by_hand)


def test_layer_latency_is_the_gumbel_weighted_sum(supernet: Supernet) -> None:
    layer = supernet.layers[3]  # irb 24->32 s2 at 8x8, max hidden 96
    with torch.no_grad():
        layer.theta.copy_(torch.tensor([0.3, -0.2, 0.1, 0.5]))
        for i, node in enumerate(layer.candidates.values()):
            node.theta.fill_(0.2 * i - 0.3)
    x = torch.randn(2, 24, 8, 8)
    torch.manual_seed(7)
    _, lat = layer(x, tau=1.0)
    torch.manual_seed(7)
    a = F.gumbel_softmax(layer.theta.detach(), tau=1.0)
    expected = 0.0
    for a_i, spec, node in zip(a, layer.specs, layer.candidates.values()):
        g = F.gumbel_softmax(torch.stack([torch.zeros(()), node.theta.detach()]), tau=1.0)
        small, large = node.masks.small, node.masks.large  # 48 and 96 at the start
        lat_of = [10 + 0.5 * w + 2 * spec.kernel_size + 5 * spec.se for w in (small, large)]  # net of the overhead
        expected += a_i.item() * (g[0].item() * lat_of[0] + g[1].item() * lat_of[1])
    assert (small, large) == (48, 96)
    assert lat.item() == pytest.approx(expected, rel=1e-6)


def test_network_latency_is_fixed_parts_plus_layers(supernet: Supernet) -> None:
    prune(supernet, 0.0, final=True)  # one block per layer: only the Prunodes still mix
    for node in supernet.prunodes():
        node.masks.small, node.masks.large = 32, 48
    torch.manual_seed(0)
    _, lat = supernet(torch.randn(2, 3, 32, 32), tau=1.0)
    torch.manual_seed(0)
    torch.randn(2, 3, 32, 32)
    expected = OVERHEAD_US + (27 - OVERHEAD_US) + (23 - OVERHEAD_US)  # stem, head, one call overhead
    for layer in supernet.layers:
        spec, node = layer.specs[layer.alive[0]], layer.candidate(layer.alive[0])
        if isinstance(node, Prunode):
            g = F.gumbel_softmax(torch.stack([torch.zeros(()), node.theta.detach()]), tau=1.0)
            expected += sum(gi.item() * (10 + 0.5 * w + 2 * spec.kernel_size + 5 * spec.se) for gi, w in zip(g, (32, 48)))
        else:  # conv 16->16: 10 + 0.5 * 16 + 2k
            expected += 10 + 0.5 * 16 + 2 * spec.kernel_size
    assert lat.item() == pytest.approx(expected, rel=1e-6)


def test_threshold_schedule_and_progress() -> None:
    assert prune_threshold(8, 7, 20, 0.15, 0.55) == pytest.approx(0.15 + 0.4 / 13)
    assert prune_threshold(20, 7, 20, 0.15, 0.55) == pytest.approx(0.55)
    assert prune_threshold(71, 70, 200, 0.15, 0.55) == pytest.approx(0.15 + 0.4 / 130)
    with pytest.raises(ValueError):
        prune_threshold(7, 7, 20, 0.15, 0.55)
    assert cosine(0.002, 0, 10) == pytest.approx(0.002)
    assert cosine(0.002, 5, 10) == pytest.approx(0.001)
    assert cosine(0.002, 10, 10) == pytest.approx(0.0)
    assert search_progress(7, 0, 4, 7, 9) == pytest.approx(1 / 8)
    assert search_progress(8, 3, 4, 7, 9) == pytest.approx(1.0)
    assert search_progress(2, 1, 4, 7, 9) == 0.0  # warm-up


def _set_probs(layer, probs: list[float]) -> None:
    with torch.no_grad():
        layer.theta.copy_(torch.tensor(probs).log())


def test_pruning_removes_blocks_under_threshold_and_frees_them(supernet: Supernet) -> None:
    layer = supernet.layers[1]  # not skippable (stride 2)
    _set_probs(layer, [0.1, 0.2, 0.3, 0.4])
    removed = prune_layer(layer, 0.25)
    assert layer.alive == [2, 3] and len(removed) == 2
    assert all(isinstance(m, Prunode) for m in removed)
    weights = {id(p) for p in supernet.weight_parameters()}
    assert not any(id(p) in weights for m in removed for p in m.parameters())
    prune_layer(layer, 0.9)  # both under threshold: the most probable block always stays
    assert layer.alive == [3]


def test_last_epoch_keeps_exactly_the_best_block(supernet: Supernet) -> None:
    for layer, best in zip(supernet.layers, [1, 0, 3, 2, 1, 0]):
        probs = [0.2] * len(layer.alive)
        probs[best] = 0.4
        _set_probs(layer, probs)
    prune(supernet, 0.01, final=True)
    assert [layer.alive for layer in supernet.layers] == [[1], [0], [3], [2], [1], [0]]
    assert not any(isinstance(c, SkipCandidate) for layer in supernet.layers for c in layer.candidates.values())


def test_penultimate_block_of_a_skippable_layer_becomes_a_skip(supernet: Supernet) -> None:
    layer = supernet.layers[4]  # irb 32->32 stride 1: skippable
    _set_probs(layer, [0.1, 0.15, 0.3, 0.45])
    prune_layer(layer, 0.35)  # 0 and 1 are removed; 2 would leave one block, so it becomes the skip
    assert layer.alive == [2, 3]
    assert isinstance(layer.candidate(2), SkipCandidate) and layer.skip_slot == 2
    assert layer.theta[2].item() == layer.theta[3].item()  # the race starts level
    layer.phi, layer.lam = 1.1, 0.4
    assert skip_multipliers(layer) == {2: 1.1, 3: 0.4}

    x = torch.randn(2, 32, 4, 4)
    torch.manual_seed(5)
    out, lat = layer(x, tau=1.0)
    torch.manual_seed(5)
    a = F.gumbel_softmax(layer.theta.detach()[[2, 3]], tau=1.0)
    block_out, block_lat = layer.candidate(3)(x, 1.0)
    assert torch.allclose(out, a[0] * 1.1 * x + a[1] * 0.4 * block_out, atol=1e-6)
    assert lat.item() == pytest.approx(a[1].item() * block_lat.item(), rel=1e-6)  # a skip costs nothing

    _set_probs(layer, [0.5, 0.5, 0.2, 0.8])
    prune_layer(layer, 0.3)  # the skip loses: the multipliers stop
    assert layer.alive == [3] and skip_multipliers(layer) == {}


def test_non_skippable_layer_never_gets_a_skip(supernet: Supernet) -> None:
    layer = supernet.layers[3]
    _set_probs(layer, [0.1, 0.15, 0.3, 0.45])
    prune_layer(layer, 0.35)
    assert layer.alive == [3] and layer.skip_slot is None


def test_structure_replays_pruning(space, supernet: Supernet) -> None:
    _set_probs(supernet.layers[4], [0.1, 0.15, 0.3, 0.45])
    prune_layer(supernet.layers[4], 0.35)
    _set_probs(supernet.layers[1], [0.1, 0.2, 0.3, 0.4])
    prune_layer(supernet.layers[1], 0.25)
    next(supernet.prunodes()).masks.step(-0.3, 0.4)
    torch.manual_seed(1)
    fresh = Supernet(space, SpaceLatency(synthetic_table(space), space, 10), 10)
    fresh.load_structure(supernet.structure())
    fresh.load_state_dict(supernet.state_dict())
    assert fresh.structure() == supernet.structure()
    assert fresh.alive_summary() == supernet.alive_summary()
    assert isinstance(fresh.layers[4].candidate(2), SkipCandidate)


def test_choices_and_deploy_state_dict_build_the_arch(space, supernet: Supernet) -> None:
    from onnxnas.arch import check_fits_space
    from onnxnas.blocks import build_model

    prune(supernet, 0.0, final=True)
    choices, hidden_index = supernet.choices()
    arch = make_arch(space, choices, num_classes=10)
    check_fits_space(arch, space)
    model = build_model(arch)
    state = supernet.deploy_state_dict()
    assert set(state) == set(model.state_dict())
    for key, target in model.state_dict().items():
        assert state[key].dim() == target.dim()
    assert all(isinstance(c, (FixedCandidate, Prunode)) for layer in supernet.layers for c in layer.candidates.values())
    assert hidden_index["1"] == list(range(arch.layers[1].hidden_chs))
