"""`search --method prunet --target-latency-us X`: alpha bisected over branches of one warm-up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from onnxnas.arch import load_arch
from onnxnas.lut.table import LatencyTable
from onnxnas.search import trainer as trainer_module
from onnxnas.search.alpha_bisection import log_midpoint, pick
from onnxnas.search.runner import Variant, VariantResult
from onnxnas.space import load_space
from search_fixtures import run_search, write_synthetic_table



@pytest.fixture(scope="module")
def lut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_table(load_space("tiny"), tmp_path_factory.mktemp("lut") / "tiny-test.json")



def result(alpha: float, latency: float) -> VariantResult:
    return VariantResult(Variant(alpha, 0.55), None, Path(f"a{alpha}"), latency, 1.0, 6)  # type: ignore[arg-type]


def test_log_midpoint_and_pick() -> None:
    assert log_midpoint(0.05, 20) == 1.0
    assert log_midpoint(0.05, 1.0) == 0.2236
    assert log_midpoint(1.0, 20) == 4.472
    tried = [result(20, 40.0), result(1, 55.0), result(4.472, 55.0), result(0.2236, 70.0)]
    assert pick(tried, 60.0).variant.alpha == 1  # least slack; the smaller alpha of two ties
    assert pick(tried, 39.0) is None


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())["bisection"]


@pytest.mark.slow
def test_loose_budget_bisects_down_and_ships_the_closest(lut: Path, tmp_path: Path) -> None:
    assert run_search(lut, tmp_path, "--target-latency-us", "100000", "--bisect-branches", "3") == 0
    record = summary(tmp_path)
    assert [b["alpha"] for b in record["branches"]] == [20.0, 1.0, 0.2236]  # every branch met it: towards LO
    assert all(b["meets_budget"] for b in record["branches"])
    chosen = max(record["branches"], key=lambda b: b["predicted_latency_us"])
    assert record["chosen_alpha"] == chosen["alpha"]
    arch = load_arch(tmp_path / "arch.json")
    branch = load_arch(tmp_path / chosen["arch"])
    assert arch.hash == branch.hash and arch.provenance["bisection"] == record
    assert arch.provenance["predicted_latency_us"] == pytest.approx(LatencyTable.load(lut).arch_latency(arch))
    assert (tmp_path / "weights.pt").read_bytes() == (tmp_path / chosen["arch"]).with_name("weights.pt").read_bytes()
    assert torch.load(tmp_path / "weights.pt", weights_only=True)["arch_hash"] == arch.hash


def test_unreachable_budget_names_the_fastest_reached(lut: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run_search(lut, tmp_path, "--target-latency-us", "1", "--bisect-branches", "1") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the 4-epoch branch's not-settled warning
    fastest = summary(tmp_path)["branches"][0]["predicted_latency_us"]
    assert f"the fastest arch the search reached (--alpha 20) is {fastest:.1f} µs by the LUT" in err
    assert "--alpha-range" in err
    assert not (tmp_path / "arch.json").exists()


@pytest.mark.slow
def test_killed_bisection_resumes_without_redoing_finished_branches(lut: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    budget = ("--target-latency-us", "100000", "--bisect-branches", "2")
    assert run_search(lut, tmp_path / "straight", *budget) == 0
    real = trainer_module.SearchTrainer.run_epoch
    calls = {"n": 0}

    def interrupted(self):  # 1 warm-up epoch + 3 epochs of branch alpha 20, then killed in branch alpha 1
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(trainer_module.SearchTrainer, "run_epoch", interrupted)
    out = tmp_path / "resumed"
    assert run_search(lut, out, *budget) == 130
    assert run_search(lut, out, *budget, "--resume") == 0
    assert calls["n"] == 1 + 3 + 3 + 1  # branch alpha 1 resumed from its epoch 1: nothing trained twice
    straight, resumed = summary(tmp_path / "straight"), summary(out)
    assert [b["alpha"] for b in resumed["branches"]] == [20.0, 1.0]
    assert [b["predicted_latency_us"] for b in resumed["branches"]] == \
        [b["predicted_latency_us"] for b in straight["branches"]]


@pytest.mark.parametrize("extra,message", [
    (["--alpha", "0.5"], "--alpha and --target-latency-us exclude each other"),
    (["--lambda", "0.4,0.85"], "--target-latency-us takes one --lambda"),
    (["--alpha-range", "5,1"], "--alpha-range needs 0 < LO < HI"),
    (["--alpha-range", "1"], "--alpha-range takes two numbers LO,HI"),
])
def test_bad_budget_flags_are_one_line(lut: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                       extra: list[str], message: str) -> None:
    assert run_search(lut, tmp_path, "--target-latency-us", "50", *extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
