"""`onnxnas search` end to end: outputs, resume, sweeps, bad input, NaN handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from onnxnas.arch import check_fits_space, load_arch
from onnxnas.blocks import build_model
from onnxnas.cli import main
from onnxnas.lut.table import LatencyTable
from onnxnas.search import trainer as trainer_module
from onnxnas.search.checkpoint import load_search_state
from onnxnas.space import load_space
from search_fixtures import run_search, write_synthetic_table

REPO = Path(__file__).resolve().parents[1]
CPU_LUT = REPO / "latency_tables" / "tiny-cpu-onnxruntime-fp32.json"


@pytest.fixture(scope="module")
def lut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_table(load_space("tiny"), tmp_path_factory.mktemp("lut") / "tiny-test.json")



def load_weights_into_model(arch_path: Path) -> torch.nn.Module:
    """What finalize does: slice hidden channels by hidden_index, load strictly into build_model(arch)."""
    arch = load_arch(arch_path)
    ckpt = torch.load(arch_path.parent / arch.provenance["checkpoint"], weights_only=True)
    assert ckpt["onnxnas_checkpoint"] == 1 and ckpt["arch_hash"] == arch.hash
    model = build_model(arch)
    state = {}
    for key, target in model.state_dict().items():
        value = ckpt["state_dict"][key]
        layer = key.split(".")[1] if key.startswith("blocks.") else None
        if value.shape != target.shape:
            keep = torch.tensor(ckpt["hidden_index"][layer])
            for dim, (have, want) in enumerate(zip(value.shape, target.shape)):
                if have != want:
                    value = value.index_select(dim, keep)
        state[key] = value
    assert set(ckpt["state_dict"]) == set(state)
    model.load_state_dict(state)
    return model


def test_search_on_digits_with_the_committed_cpu_lut(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["search", "--lut", str(CPU_LUT), "--data", "digits", "--out", str(out), "--epochs", "5",
                 "--warmup-epochs", "2", "--max-batches", "6", "--batch-size", "32"]) == 0
    arch = load_arch(out / "arch.json")
    space = load_space("tiny")
    check_fits_space(arch, space)
    table = LatencyTable.load(CPU_LUT)
    prov = arch.provenance
    assert prov["method"] == "prunet" and prov["dataset"] == "digits" and prov["seed"] == 0
    assert prov["predicted_latency_us"] == pytest.approx(table.arch_latency(arch))
    assert prov["lut"]["path"] == str(CPU_LUT) and len(prov["lut"]["sha256"]) == 64
    assert prov["hyperparameters"]["alpha"] == 0.6 and prov["hyperparameters"]["lam"] == 0.55
    model = load_weights_into_model(out / "arch.json").eval()
    assert model(torch.zeros(arch.input_shape)).shape == (1, 10)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["phase"] for m in metrics] == ["warmup"] * 2 + ["search"] * 3
    assert [m["threshold"] for m in metrics[2:]] == pytest.approx([0.15 + 0.4 / 3, 0.15 + 0.8 / 3, 0.55])
    assert all(len(alive) == 1 for alive in metrics[-1]["alive"])  # one block per layer at the end
    assert sum(map(len, metrics[1]["alive"])) == 2 + 4 * 5  # nothing pruned during warm-up


def _arch_state(out: Path) -> tuple[dict, list[torch.Tensor], list[dict]]:
    state = load_search_state(out / "checkpoints" / "last.pt")
    thetas = [v for k, v in state["model"].items() if k.endswith("theta")]
    metrics = [{k: v for k, v in m.items() if k not in ("epoch_time_s", "epoch_cpu_s")} for m in state["metrics"]]
    return json.loads((out / "arch.json").read_text()), thetas, metrics


def test_resumed_run_matches_an_uninterrupted_one(lut: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    longer = ("--warmup-epochs", "2", "--epochs", "5")
    assert run_search(lut, tmp_path / "straight", *longer) == 0

    real = trainer_module.SearchTrainer.run_epoch
    calls = {"n": 0}

    def interrupted(self):  # killed in epoch 2 (during warm-up), then in epoch 4 (after a branch checkpoint)
        calls["n"] += 1
        if calls["n"] in (2, 5):
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(trainer_module.SearchTrainer, "run_epoch", interrupted)
    out = tmp_path / "resumed"
    assert run_search(lut, out, *longer) == 130
    assert load_search_state(out / "checkpoints" / "warmup.pt")["epoch"] == 1
    assert run_search(lut, out, *longer) == 2  # a started search needs --resume
    assert run_search(lut, out, *longer, "--resume") == 130
    assert load_search_state(out / "checkpoints" / "last.pt")["epoch"] == 3
    assert run_search(lut, out, *longer, "--resume") == 0
    assert calls["n"] == 7

    arch_a, theta_a, metrics_a = _arch_state(tmp_path / "straight")
    arch_b, theta_b, metrics_b = _arch_state(out)
    assert arch_a == arch_b
    assert metrics_a == metrics_b
    for a, b in zip(theta_a, theta_b, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_resume_refuses_other_hyperparameters(lut: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run_search(lut, tmp_path) == 0
    assert run_search(lut, tmp_path, "--resume", "--t-final", "0.6") == 2
    assert "--t-final" in capsys.readouterr().err


def test_sweep_shares_one_warmup(lut: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = trainer_module.SearchTrainer.run_epoch
    phases = []

    def counted(self):
        line = real(self)
        phases.append(line["phase"])
        return line

    monkeypatch.setattr(trainer_module.SearchTrainer, "run_epoch", counted)
    assert run_search(lut, tmp_path, "--alpha", "0.2,3", "--lambda", "0.4,0.85") == 0
    assert phases.count("warmup") == 1 and phases.count("search") == 4 * 3
    summary = json.loads((tmp_path / "summary.json").read_text())
    rows = summary["variants"]
    assert [(r["alpha"], r["lambda"]) for r in rows] == [(0.2, 0.4), (0.2, 0.85), (3.0, 0.4), (3.0, 0.85)]
    for alpha in (0.2, 3.0):
        mine = [r for r in rows if r["alpha"] == alpha]
        assert sum(r["best_for_alpha"] for r in mine) == 1
        best = min(mine, key=lambda r: r["search_loss"])
        assert best["best_for_alpha"] and summary["best"][f"{alpha:g}"] == best["arch"]
    for r in rows:
        arch = load_arch(tmp_path / r["arch"])
        assert arch.depth == r["depth"]
        assert arch.provenance["predicted_latency_us"] == pytest.approx(r["predicted_latency_us"])
        metrics = (tmp_path / r["arch"]).parent / "metrics.jsonl"
        assert len(metrics.read_text().splitlines()) == 4  # the shared warm-up epoch + its own 3


@pytest.mark.parametrize("extra,flag", [
    (["--t-init", "0.3"], "--t-init"),  # > 1/max(N_l) = 1/4
    (["--t-init", "0"], "--t-init"),
    (["--t-final", "1.2"], "--t-final"),
    (["--alpha", "0.5,-1"], "--alpha"),
    (["--alpha", "fast"], "--alpha"),
    (["--epochs", "1"], "--epochs"),  # must exceed --warmup-epochs 1
    (["--tau", "0"], "--tau"),
    (["--batch-size", "4000"], "--batch-size"),
])
def test_bad_hyperparameters_name_the_flag(lut: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                          extra: list[str], flag: str) -> None:
    assert run_search(lut, tmp_path / "x", *extra) == 2
    err = capsys.readouterr().err
    assert flag in err and err.count("\n") == 1 and "Traceback" not in err


def test_lut_missing_keys_lists_them_with_the_fill_command(lut: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    table = LatencyTable.load(lut)
    gone = sorted(k for k in table.entries if k.startswith("irb:") and ":k5:" in k)
    for key in gone:
        del table.entries[key]
    table.save(tmp_path / "partial.json")
    assert run_search(tmp_path / "partial.json", tmp_path / "x") == 2
    err = capsys.readouterr().err
    assert f"lacks {len(gone)} key(s)" in err and gone[0] in err and "onnxnas build-lut" in err


def test_lut_of_another_space_is_refused(lut: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = json.loads(lut.read_text())
    data["header"]["space"]["resolution"] = 64
    data["header"]["space"]["hash"] = "0123456789abcdef"
    (tmp_path / "other.json").write_text(json.dumps(data))
    assert run_search(tmp_path / "other.json", tmp_path / "x") == 2
    assert "built for space" in capsys.readouterr().err


def test_nan_loss_stops_naming_epoch_and_batch_and_keeps_the_checkpoint(
        lut: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    real = trainer_module.search_loss
    calls = {"n": 0}

    def poisoned(ce, latency, alpha, beta):
        calls["n"] += 1
        loss = real(ce, latency, alpha, beta)
        return loss * float("nan") if calls["n"] == 3 + 3 + 2 else loss  # epoch 3, batch 2

    monkeypatch.setattr(trainer_module, "search_loss", poisoned)
    assert run_search(lut, tmp_path) == 2
    err = capsys.readouterr().err
    assert "epoch 3, batch 2" in err and "epoch 2) is kept" in err
    assert load_search_state(tmp_path / "checkpoints" / "last.pt")["epoch"] == 2
    monkeypatch.setattr(trainer_module, "search_loss", real)
    assert run_search(lut, tmp_path, "--resume") == 0  # and the kept checkpoint resumes
    check_fits_space(load_arch(tmp_path / "arch.json"), load_space("tiny"))
