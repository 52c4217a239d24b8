"""bench/bench_peers.py: the shared start, the knob search that lets a peer meet a latency target,
and the peers themselves on onnxnas's blocks (skipped cleanly without the `[peers]` extra)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_peers  # noqa: E402

from onnxnas.blocks import build_model  # noqa: E402
from onnxnas.data import load_data  # noqa: E402
from onnxnas.space import load_space  # noqa: E402
from onnxnas.space.choose import extreme_arch  # noqa: E402
from onnxnas.stats import count_stats  # noqa: E402


def _knob_models(monkeypatch: pytest.MonkeyPatch,
                 latency: Callable[[float], float]) -> Callable[[float], nn.Module]:
    """Models that carry their knob, timed as ``latency(knob)``; knobs above 0.8 cannot be built."""
    monkeypatch.setattr(bench_peers, "measured_us", lambda model, shape, folder: latency(model.knob))

    def make(knob: float) -> nn.Module:
        if knob > 0.8:  # like FastNAS below its floor
            raise bench_peers.Unreachable(f"knob {knob}")
        model = nn.Identity()
        model.knob = knob
        return model
    return make


def test_knob_search_keeps_the_mildest_knob_that_meets_the_target(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    # 100 us at knob 0 falling linearly to 20 us at knob 1: 60 us needs knob >= 0.5
    make = _knob_models(monkeypatch, lambda k: 100.0 - 80.0 * k)
    search = bench_peers.KnobSearch(make, 0.0, 1.0, 10, (1, 3, 8, 8), tmp_path)
    assert len(search.tried) == 10 and search.grid_us[-1] is None  # the grid is timed once; 0.9 and 1.0 fail
    found = search.best(60.0)
    assert found.met and 0.5 <= found.knob <= 0.5 + 0.1 / 2**bench_peers.KNOB_STEPS and found.latency_us <= 60.0
    assert found.model.knob == found.knob and found.find_s[0] >= search.grid_s[0]
    tried = len(search.tried)
    assert search.best(60.0).knob == found.knob and len(search.tried) == tried  # a second target reuses the work
    floor = search.best(10.0)
    assert not floor.met and floor.knob == pytest.approx(0.8) and floor.latency_us == pytest.approx(36.0)
    # FastNAS's FLOPs share runs the other way: 20 us at 0 rising to 100 us at 1, mild end 1
    make = _knob_models(monkeypatch, lambda k: 20.0 + 80.0 * k)
    found = bench_peers.KnobSearch(make, 1.0, 0.0, 10, (1, 3, 8, 8), tmp_path).best(60.0)
    assert found.met and 0.5 - 0.1 / 2**bench_peers.KNOB_STEPS <= found.knob <= 0.5


def test_a_knob_that_is_not_monotone_finds_the_floor_between_grid_values(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    """Torch-Pruning on tiny: faster up to ratio ~0.9, then slower again once a coupled group is left whole.
    Bisecting from the fast end would report the slow end as the floor."""
    make = _knob_models(monkeypatch, lambda k: 240.0 - 200.0 * k if k < 0.73 else 100.0)
    search = bench_peers.KnobSearch(make, 0.0, 0.8, 8, (1, 3, 8, 8), tmp_path)
    floor = search.best(50.0)
    assert not floor.met and 0.72 < floor.knob < 0.73 and floor.latency_us < 96.0  # grid best: 0.7 at 100 us
    assert search.best(150.0).met


def test_torch_pruning_prunes_onnxnas_blocks_and_keeps_the_classifier() -> None:
    pytest.importorskip("torch_pruning", reason="needs the [peers] extra")
    arch = extreme_arch(load_space("tiny"), widest=True, num_classes=10)
    dense = build_model(arch)
    data = load_data("digits", arch.input_shape[-1])
    before = count_stats(dense, arch.input_shape)
    for importance in ("magnitude", "taylor"):
        pruned = bench_peers.tp_pruned(dense, 0.5, importance, data, arch.input_shape)
        after = count_stats(pruned, arch.input_shape)
        assert after.macs < 0.5 * before.macs and after.params < before.params
        assert pruned.head.fc.out_features == 10
        assert pruned(torch.zeros(arch.input_shape)).shape == (1, 10)
    assert count_stats(dense, arch.input_shape) == before  # the dense start is copied, never pruned in place
