"""`onnxnas search --method filterlevel` end to end: outputs, budget met, resume refusal, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from onnxnas.arch import load_arch
from onnxnas.cli import main
from onnxnas.cost import BopsCost
from onnxnas.search.checkpoint import load_search_state
from onnxnas.search.filterlevel.trainer import FilterLevelTrainer

TINY = Path(__file__).resolve().parents[1] / "examples" / "tiny.arch.json"
FAST = ["--data", "synthetic", "--epochs", "2", "--max-batches", "2", "--batch-size", "16", "--final-samples", "2",
        "--samples", "2"]


def search(out: Path, *extra: str) -> int:
    return main(["search", "--method", "filterlevel", "--arch", str(TINY), "--out", str(out), *FAST, *extra])


@pytest.mark.slow
def test_search_writes_a_budgeted_arch_and_trained_grids(tmp_path: Path) -> None:
    assert search(tmp_path, "--budget-bops", "0.4x") == 0
    arch = load_arch(tmp_path / "arch.json")
    prov = arch.provenance
    bops = BopsCost().exact(arch)
    assert prov["method"] == "filterlevel" and bops == pytest.approx(prov["searched_bops"])
    assert bops <= prov["budget_bops"] == pytest.approx(0.4 * prov["reference_bops"])
    for spec in (arch.stem, *[l for l in arch.layers if l.type != "skip"], arch.head):
        for conv in spec.convs():
            groups = spec.groups_of(conv.name)
            assert sum(g.filters for g in groups) == conv.out_chs
    ckpt = torch.load(tmp_path / "weights.pt", weights_only=True)
    head_bits = ckpt["quant_bits"]["head.conv.0.weight"]
    assert head_bits == [g.weight_bits for g in arch.head.groups_of("conv") for _ in range(g.filters)]
    assert all(r > 0 for r in ckpt["quant_ranges"]["head.conv.0.weight"])
    candidates = json.loads((tmp_path / "candidates.json").read_text())
    assert [c["source"] for c in candidates["homogeneous"]] == [f"homogeneous {o}" for o in ("2:2", "2:4", "3:3", "8:8")]
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["phase"] for line in lines] == ["pretrain", "search"]
    assert main(["plot", str(tmp_path)]) == 0
    assert (tmp_path / "filter_groups.png").stat().st_size > 0 and (tmp_path / "bops_accuracy.png").stat().st_size > 0
    assert search(tmp_path, "--budget-bops", "0.4x") == 2  # a started search needs --resume
    assert search(tmp_path, "--budget-bops", "0.5x", "--resume") == 2  # under other settings


@pytest.mark.parametrize("extra, message", [
    (["--budget-bops", "0.5x", "--ops", "2:64"], "--ops: activation bits 64 of op '2:64' are outside 1..32"),
    (["--budget-bops", "1e5"], "--budget-bops: budget 100000 BOPs is below the cheapest configuration (every filter at 2:2"),
    (["--budget-bops", "0.5x", "--mode", "prune", "--estimator", "gumbel"], "--estimator: the Gumbel estimator"),
    ([], "--budget-bops: --method filterlevel needs a budget"),
])
def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str) -> None:
    assert search(tmp_path, *extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_prunet_still_needs_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "--method", "prunet", "--out", str(tmp_path)]) == 2
    assert "--lut: --method prunet needs a latency table" in capsys.readouterr().err


@pytest.mark.slow
def test_prune_mode_shrinks_hidden_widths_within_budget(tmp_path: Path) -> None:
    assert search(tmp_path, "--mode", "prune", "--budget-bops", "0.6x") == 0
    arch = load_arch(tmp_path / "arch.json")
    source = load_arch(TINY)
    assert arch.derived and BopsCost().exact(arch) <= arch.provenance["budget_bops"]
    assert all(a.hidden_chs <= b.hidden_chs for a, b in zip(arch.layers, source.layers))
    ckpt = torch.load(tmp_path / "weights.pt", weights_only=True)
    assert ckpt["hidden_index"]["4"] == list(range(arch.layers[4].hidden_chs))


def _outcome(out: Path) -> tuple[dict, list[dict], dict[str, torch.Tensor]]:
    """arch.json, the per-epoch metrics without wall-clock fields, and the deployable weights."""
    state = load_search_state(out / "checkpoints" / "last.pt")
    metrics = [{k: v for k, v in m.items() if k not in ("epoch_time_s", "epoch_cpu_s")} for m in state["metrics"]]
    weights = torch.load(out / "weights.pt", weights_only=True)["state_dict"]
    return json.loads((out / "arch.json").read_text()), metrics, weights


@pytest.mark.slow
def test_resumed_search_matches_an_uninterrupted_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    longer = ("--budget-bops", "0.5x", "--epochs", "3")
    assert search(tmp_path / "straight", *longer) == 0
    real = FilterLevelTrainer.run_epoch
    calls = {"n": 0}

    def interrupted(self: FilterLevelTrainer) -> dict:  # killed in epoch 2 (ranges not yet set), then in epoch 3
        calls["n"] += 1
        if calls["n"] in (2, 4):
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(FilterLevelTrainer, "run_epoch", interrupted)
    out = tmp_path / "resumed"
    assert search(out, *longer) == 130
    assert load_search_state(out / "checkpoints" / "last.pt")["epoch"] == 1
    assert search(out, *longer, "--resume") == 130
    assert load_search_state(out / "checkpoints" / "last.pt")["epoch"] == 2
    assert search(out, *longer, "--resume") == 0
    assert calls["n"] == 5
    arch_a, metrics_a, weights_a = _outcome(tmp_path / "straight")
    arch_b, metrics_b, weights_b = _outcome(out)
    assert arch_a == arch_b
    assert len(metrics_a) == len(metrics_b) == 3
    for a, b in zip(metrics_a, metrics_b, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == (pytest.approx(a[key], abs=1e-6) if isinstance(a[key], float) else a[key]), key
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        assert torch.allclose(weights_a[key].float(), weights_b[key].float(), atol=1e-6), key
