"""Short searches converge: enough architecture steps on small data, and a Prunode report that says
when a Prunode did not settle."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from onnxnas.search.prunode import Prunode, PrunodeMasks
from onnxnas.search.schedules import MIN_ARCH_STEPS, arch_steps_per_epoch


def test_small_data_gets_extra_architecture_steps() -> None:
    # digits at batch 64: 22 batches; 20 epochs with 7 of warm-up leave 13 search epochs
    assert arch_steps_per_epoch(22, 0.2, 13, MIN_ARCH_STEPS, None) == (18, 40)  # 40 x 13 = 520 steps
    assert arch_steps_per_epoch(22, 0.2, 13, 0, None) == (18, 4)  # the paper's 20%: 52 steps
    assert arch_steps_per_epoch(1000, 0.2, 130, MIN_ARCH_STEPS, None) == (800, 200)  # large data: unchanged
    assert arch_steps_per_epoch(3, 0.2, 3, MIN_ARCH_STEPS, 3) == (2, 1)  # --max-batches caps the whole epoch
    assert arch_steps_per_epoch(6, 0.2, 3, MIN_ARCH_STEPS, 8) == (5, 3)


def known_optimum(optimum: int, steps: int, seed: int) -> dict:
    """A Prunode over 32..256 channels trained by Adam on a toy loss whose best width is ``optimum``
    (a quadratic bowl, plus gradient noise), with the mask schedule over ``steps`` architecture steps."""
    torch.manual_seed(seed)
    node = Prunode(nn.Identity(), PrunodeMasks(256, 32), float)
    adam = torch.optim.Adam([node.theta], lr=0.01)  # PruNet's default --arch-lr
    for step in range(steps):
        small, large = ((w - optimum) / 256 for w in (node.masks.small, node.masks.large))
        p_large = torch.sigmoid(node.theta)
        loss = (1 - p_large) * small**2 + p_large * (large**2 + 0.01 * torch.randn(()))
        adam.zero_grad()
        loss.backward()
        adam.step()
        node.update_masks((step + 1) / steps)
    return node.report()


@pytest.mark.parametrize("optimum", [224, 160, 64])
def test_520_steps_find_the_known_optimum_and_say_settled(optimum: int) -> None:
    report = known_optimum(optimum, 520, seed=0)
    assert report["chosen"] == optimum
    assert report["adjacent"] and report["settled"]
    assert report["large"] - report["small"] == 32


def test_52_steps_are_reported_as_not_settled() -> None:
    report = known_optimum(64, 52, 0)
    assert report["chosen"] == 32  # the wrong width: the masks stopped before finding 64
    assert report["adjacent"] and not report["settled"]
    assert abs(report["p_large"] - 0.5) < 0.05
    assert known_optimum(224, 52, 0)["settled"] is False


def test_an_epoch_longer_than_the_data_takes_further_permutations() -> None:
    from torch.utils.data import TensorDataset

    from onnxnas.search.distributed import DistContext
    from onnxnas.search.trainer import epoch_loader

    data = TensorDataset(torch.arange(10))
    ctx = DistContext(rank=0, world_size=1)

    def order(batches: int) -> list[int]:
        return [int(i) for (x,) in epoch_loader(data, 3, 0, ctx, 4, batches, 0, False) for i in x]

    two_passes = order(5)  # 20 samples from 10: every sample twice, the first pass as before
    assert sorted(two_passes) == sorted(list(range(10)) * 2)
    assert two_passes[:8] == order(2) and sorted(two_passes[:10]) == list(range(10))
    assert order(5) == two_passes  # seeded by (seed, epoch): a resumed epoch sees the same batches


def test_the_search_table_says_per_prunode_whether_it_settled() -> None:
    from pathlib import Path
    from types import SimpleNamespace

    from onnxnas.search.runner import Variant, VariantResult
    from onnxnas.search.sweep import format_results, summary

    settled = {"layer": 0, "small": 96, "large": 128, "chosen": 128, "p_large": 0.71, "adjacent": True, "settled": True}
    undecided = {**settled, "layer": 3, "small": 64, "large": 96, "chosen": 96, "p_large": 0.51, "settled": False}
    arch = SimpleNamespace(provenance={"prunodes": [settled, undecided]})
    result = VariantResult(Variant(0.6, 0.55), arch, Path("/o/variants/a/arch.json"), 80.0, 1.5, 6, (3,))  # type: ignore[arg-type]
    lines = format_results([result]).splitlines()
    assert lines[1].split()[5] == "NO"
    assert lines[2] == ("       prunodes: L0 96/128->128 (p_large 0.71, settled), "
                        "L3 64/96->96 (p_large 0.51, undecided)")
    row = summary([result], Path("/o"))["variants"][0]
    assert row["converged"] is False and row["prunodes"] == [settled, undecided]
