"""`onnxnas train` (retrain from scratch) and `onnxnas plot`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from onnxnas.arch import load_arch
from onnxnas.blocks import build_model
from onnxnas.cli import main
from onnxnas.data import load_data
from onnxnas.space import load_space
from onnxnas.space.choose import make_arch
from onnxnas.train import TrainConfig, evaluate, train_arch
from search_fixtures import write_synthetic_table

PNG = b"\x89PNG\r\n\x1a\n"


def _arch(tmp_path: Path, num_classes: int = 10) -> Path:
    space = load_space("tiny")
    choices = [{"kernel_size": 3}] + [{"kernel_size": 3, "se": False, "hidden_chs": 32}] * 3 + ["skip", "skip"]
    return make_arch(space, choices, num_classes=num_classes).save(tmp_path / "arch.json")


def test_train_reports_accuracy_and_writes_a_loadable_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _arch(tmp_path)
    assert main(["train", str(path), "--data", "digits", "--epochs", "2", "--max-batches", "6"]) == 0
    run = tmp_path / "train" / "seed0"
    result = json.loads((run / "result.json").read_text())
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert history[-1]["train_loss"] < history[0]["train_loss"] < 2.5
    out = capsys.readouterr().out
    assert f"val accuracy {result['val_accuracy']:.4f}, test accuracy {result['test_accuracy']:.4f}" in out
    assert result["split"] == {"train": 1259, "val": 179, "test": 359}
    ckpt = torch.load(run / "weights.pt", weights_only=True)
    arch = load_arch(path)
    model = build_model(arch)
    model.load_state_dict(ckpt["state_dict"])
    data = load_data("digits", arch.resolution)
    assert evaluate(model, data.val, torch.device("cpu")) == pytest.approx(result["val_accuracy"])
    assert evaluate(model, data.test, torch.device("cpu")) == pytest.approx(result["test_accuracy"])


def test_train_never_overwrites_a_finished_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _arch(tmp_path)
    flags = ["--data", "synthetic", "--epochs", "1", "--max-batches", "2", "--batch-size", "16"]
    assert main(["train", str(path), *flags]) == 0
    assert main(["train", str(path), *flags, "--seed", "1"]) == 0  # a second seed sits beside the first
    first = (tmp_path / "train" / "seed0" / "result.json").read_bytes()
    assert json.loads((tmp_path / "train" / "seed1" / "result.json").read_text())["seed"] == 1
    capsys.readouterr()
    assert main(["train", str(path), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{tmp_path / 'train' / 'seed0'}: holds a finished training run (result.json); it is not overwritten" in err
    assert main(["train", str(path), *flags, "--seed", "5", "--out", str(tmp_path / "train" / "seed0")]) == 2
    assert (tmp_path / "train" / "seed0" / "result.json").read_bytes() == first


def test_train_is_seeded(tmp_path: Path) -> None:
    arch = load_arch(_arch(tmp_path))
    data = load_data("synthetic", arch.resolution)
    cfg = TrainConfig(epochs=1, max_batches=3, batch_size=16)
    runs = [train_arch(arch, data, cfg, torch.device("cpu"), progress=False)[1] for _ in range(2)]
    assert runs[0][0]["train_loss"] == runs[1][0]["train_loss"]


def test_train_refuses_a_head_of_another_class_count(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _arch(tmp_path, num_classes=7)
    assert main(["train", str(path), "--data", "digits", "--epochs", "1"]) == 2
    assert "7 classes" in capsys.readouterr().err


def test_train_bad_flag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", str(_arch(tmp_path)), "--lr", "-1"]) == 2
    assert "argument --lr: expected a finite number in (0, 10], got -1" in capsys.readouterr().err


def test_plot_draws_curves_and_the_arch(tmp_path: Path) -> None:
    lut = write_synthetic_table(load_space("tiny"), tmp_path / "lut.json")
    out = tmp_path / "run"
    assert main(["search", "--lut", str(lut), "--out", str(out), "--data", "synthetic", "--epochs", "3",
                 "--warmup-epochs", "1", "--max-batches", "2", "--batch-size", "16"]) == 0
    assert main(["plot", str(out)]) == 0
    for name in ("search_curves.png", "arch.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000


def test_plot_of_a_folder_without_metrics(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["plot", str(tmp_path)]) == 2
    assert "metrics.jsonl" in capsys.readouterr().err
