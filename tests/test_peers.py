"""bench/bench_peers.py: the shared start, the knob search that lets a peer meet a latency target,
and the peers themselves on onnxnas's blocks (skipped cleanly without the `[peers]` extra)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_peers  # noqa: E402

from onnxnas.blocks import build_model  # noqa: E402
from onnxnas.data import load_data  # noqa: E402
from onnxnas.stats import count_stats  # noqa: E402


def test_the_start_is_tinys_widest_network() -> None:
    arch = bench_peers.widest_arch(10)
    space = bench_peers.load_space("tiny")
    assert arch.depth == len(arch.layers) == len(space.positions())  # no skips
    for layer, pos in zip(arch.layers, space.positions()):
        assert layer.kernel_size == max(pos.kernel_sizes) == 5
        if pos.hidden_choices:
            assert layer.se and layer.hidden_chs == pos.max_hidden


def test_knob_bisection_keeps_the_mildest_knob_that_meets_the_target(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    # latency 100 us at knob 0 falling linearly to 20 us at knob 1: 60 us needs knob >= 0.5
    monkeypatch.setattr(bench_peers, "measured_us", lambda model, shape, folder: 100.0 - 80.0 * model.knob)

    def make(knob: float) -> nn.Module:
        if knob > 0.8:  # like FastNAS below its floor
            raise bench_peers.Unreachable(f"knob {knob}")
        model = nn.Identity()
        model.knob = knob
        return model

    bisect = bench_peers.bisect_knob
    model, knob, us, met = bisect(make, 0.0, 0.75, 60.0, (1, 3, 8, 8), tmp_path)
    assert met and 0.5 <= knob <= 0.5 + 0.75 * 2**-bench_peers.KNOB_STEPS and us <= 60.0 and model.knob == knob
    model, knob, us, met = bisect(make, 0.0, 0.75, 10.0, (1, 3, 8, 8), tmp_path)
    assert not met and knob == 0.75 and us == pytest.approx(40.0)  # unreachable: the fastest end, marked
    model, knob, us, met = bisect(make, 0.0, 1.0, 10.0, (1, 3, 8, 8), tmp_path)  # fast end cannot be built
    assert not met and 0.8 - 2**-bench_peers.KNOB_STEPS <= knob <= 0.8  # the floor is found by bisection
    # a knob whose small end is fast (FastNAS's FLOPs share): 20 us at 0 rising to 100 us at 1
    monkeypatch.setattr(bench_peers, "measured_us", lambda model, shape, folder: 20.0 + 80.0 * model.knob)
    model, knob, us, met = bisect(make, 1.0, 0.0, 60.0, (1, 3, 8, 8), tmp_path)
    assert met and 0.5 - 2**-bench_peers.KNOB_STEPS <= knob <= 0.5 and us <= 60.0


def test_torch_pruning_prunes_onnxnas_blocks_and_keeps_the_classifier() -> None:
    pytest.importorskip("torch_pruning", reason="needs the [peers] extra")
    arch = bench_peers.widest_arch(10)
    dense = build_model(arch)
    data = load_data("digits", arch.input_shape[-1], seed=0)
    before = count_stats(dense, arch.input_shape)
    for importance in ("magnitude", "taylor"):
        pruned = bench_peers.tp_pruned(dense, 0.5, importance, data, arch.input_shape)
        after = count_stats(pruned, arch.input_shape)
        assert after.macs < 0.5 * before.macs and after.params < before.params
        assert pruned.head.fc.out_features == 10
        assert pruned(torch.zeros(arch.input_shape)).shape == (1, 10)
    assert count_stats(dense, arch.input_shape) == before  # the dense start is copied, never pruned in place
