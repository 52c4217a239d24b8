"""`onnxnas finetune` survives being killed: per-epoch checkpoints, --resume repeats an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kill_fixtures import kill_when_checkpointed
from onnxnas import finetune as finetune_module
from onnxnas.cli import main
from onnxnas.deploy.checkpoint import load_checkpoint
from onnxnas.finetune import FinetuneTrainer
from onnxnas.lock import exclusive_output
from onnxnas.search.loop import LOCK_FILE

SEARCH = ["--method", "udc", "--space", "tiny-udc", "--data", "digits", "--epochs", "2", "--warmup-epochs", "1",
          "--max-batches", "4", "--batch-size", "16", "--mc-samples", "2", "--device", "cpu", "--target-size", "12KiB"]
FINETUNE = ["--data", "digits", "--epochs", "5", "--max-batches", "3", "--batch-size", "16"]  # stages 2/2/1


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # as the SIGKILL test's subprocess (OMP_NUM_THREADS=1), so the floats agree


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("udc") / "run"
    assert main(["search", "--out", str(out), *SEARCH]) == 0
    return out


@pytest.fixture(scope="module")
def whole(searched: Path) -> Path:
    """The uninterrupted finetune every resumed one must repeat."""
    torch.set_num_threads(1)
    out = searched.parent / "whole"
    assert _finetune(searched, out) == 0
    return out


def _argv(searched: Path, out: Path, *extra: str) -> list[str]:
    return ["finetune", str(searched / "arch.json"), "--weights", str(searched / "weights.pt"), "--out", str(out),
            *FINETUNE, *extra]


def _finetune(searched: Path, out: Path, *extra: str) -> int:
    return main(_argv(searched, out, *extra))


def _metrics(out: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "epoch_time_s"}
            for line in (out / "metrics.jsonl").read_text().splitlines()]


def _interrupt_at(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    """Ctrl-C once, as epoch ``epoch + 1`` starts (after ``epoch`` checkpoints)."""
    real = FinetuneTrainer.run_epoch

    def stop(self: FinetuneTrainer) -> dict:
        if self.epoch == epoch:
            monkeypatch.setattr(FinetuneTrainer, "run_epoch", real)
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(FinetuneTrainer, "run_epoch", stop)


def _assert_same_run(got: Path, want: Path, atol: float = 0.0) -> None:
    a, b = load_checkpoint(got / "weights.pt"), load_checkpoint(want / "weights.pt")
    assert a.state_dict.keys() == b.state_dict.keys()
    for name, tensor in a.state_dict.items():
        assert torch.allclose(tensor, b.state_dict[name], rtol=0, atol=atol), name
    assert a.quantizers["quant_ranges"] == pytest.approx(b.quantizers["quant_ranges"], abs=atol)
    for line_a, line_b in zip(_metrics(got), _metrics(want), strict=True):
        assert line_a == pytest.approx(line_b, abs=atol)
    result_a, result_b = (json.loads((run / "result.json").read_text()) for run in (got, want))
    assert result_a["val_accuracy"] == pytest.approx(result_b["val_accuracy"], abs=atol)


def test_whole_run_checkpoints_every_epoch(whole: Path) -> None:
    assert [(m["epoch"], m["stage"]) for m in _metrics(whole)] == [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3)]
    state = torch.load(whole / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 5 and state["finetune"]["stage"] == 3
    assert state["config"]["epochs"] == 5 and state["config"]["quant_noise"] == 0.1


@pytest.mark.parametrize("stop_after", [1, 3])  # in stage 1; in stage 2, mid pruning ramp
def test_interrupted_finetune_resumes_to_the_same_weights(searched: Path, whole: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture, stop_after: int) -> None:
    out = tmp_path / "cut"
    _interrupt_at(monkeypatch, stop_after)
    assert _finetune(searched, out) == 130
    assert not (out / "weights.pt").exists() and not (out / "result.json").exists()
    assert [m["epoch"] for m in _metrics(out)] == list(range(1, stop_after + 1))
    capsys.readouterr()
    assert _finetune(searched, out) == 2  # a started finetune is not silently overwritten
    err = capsys.readouterr().err
    assert "holds a started finetune" in err and "--resume" in err and len(err.strip().splitlines()) == 1
    assert _finetune(searched, out, "--resume") == 0
    assert [m["epoch"] for m in _metrics(out)] == [1, 2, 3, 4, 5]
    _assert_same_run(out, whole)


@pytest.mark.parametrize("flag, value, saved", [("--epochs", "6", "5"), ("--quant-noise", "0.2", "0.1"),
                                                ("--number-format", "shifted", "grid")])
def test_resume_under_other_settings_is_refused_naming_the_flag(searched: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture, flag: str, value: str,
                                                                saved: str) -> None:
    out = tmp_path / "cut"
    _interrupt_at(monkeypatch, 1)
    assert _finetune(searched, out) == 130
    capsys.readouterr()
    assert _finetune(searched, out, "--resume", flag, value) == 2
    err = capsys.readouterr().err
    assert f"cannot resume: the checkpoint was made with {flag} {saved}, not {value}" in err
    assert f"rerun with {flag} {saved}" in err and len(err.strip().splitlines()) == 1
    assert [m["epoch"] for m in _metrics(out)] == [1]  # nothing was overwritten


def test_resume_with_fewer_epochs_than_finished_names_the_flag(searched: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cut"
    _interrupt_at(monkeypatch, 4)
    assert _finetune(searched, out) == 130
    capsys.readouterr()
    assert _finetune(searched, out, "--resume", "--epochs", "3") == 2
    assert "cannot resume: the checkpoint was made with --epochs 5, not 3" in capsys.readouterr().err


def test_resume_with_nothing_to_resume_is_refused(searched: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "new"
    assert _finetune(searched, out, "--resume") == 2
    err = capsys.readouterr().err
    assert "has no finetune checkpoint to resume" in err and "drop --resume" in err
    assert len(err.strip().splitlines()) == 1 and not (out / "metrics.jsonl").exists()


def test_resume_from_other_weights_is_refused(searched: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture) -> None:
    out, other = tmp_path / "cut", tmp_path / "other" / "weights.pt"
    other.parent.mkdir()
    (other.parent / "arch.json").write_bytes((searched / "arch.json").read_bytes())
    state = torch.load(searched / "weights.pt", weights_only=True)
    name = next(k for k, v in state["state_dict"].items() if v.is_floating_point())
    state["state_dict"][name] = state["state_dict"][name] + 1e-3  # another theta for the same arch
    torch.save(state, other)
    _interrupt_at(monkeypatch, 1)
    assert _finetune(searched, out) == 130
    capsys.readouterr()
    assert _finetune(other.parent, out, "--resume") == 2
    err = capsys.readouterr().err
    assert "cannot resume: the checkpoint was made with --weights (sha256)" in err and len(err.strip().splitlines()) == 1


def test_a_second_finetune_on_the_same_out_is_refused(searched: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "busy"
    with exclusive_output(out / LOCK_FILE, "test"):
        assert _finetune(searched, out) == 2
    err = capsys.readouterr().err
    assert "another onnxnas run is writing this finetune output" in err and len(err.strip().splitlines()) == 1
    assert not (out / "metrics.jsonl").exists()


def test_a_non_finite_loss_stops_with_the_last_checkpoint_kept(searched: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture) -> None:
    out, calls = tmp_path / "nan", []
    real = finetune_module.F.cross_entropy

    def nan_in_epoch_2(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        loss = real(logits, labels)
        return loss * float("nan") if len(calls) > 3 else loss  # 3 batches per epoch

    monkeypatch.setattr(finetune_module.F, "cross_entropy", nan_in_epoch_2)
    assert _finetune(searched, out) == 2
    err = capsys.readouterr().err
    assert (f"finetune stopped: loss is not finite at epoch 2, batch 1; the last good checkpoint "
            f"({out / 'checkpoints' / 'last.pt'}, epoch 1) is kept") in err
    assert "lower --lr and start over in a new --out" in err and len(err.strip().splitlines()) == 1
    assert [m["epoch"] for m in _metrics(out)] == [1] and not (out / "weights.pt").exists()


def test_a_damaged_checkpoint_is_one_line(searched: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cut"
    _interrupt_at(monkeypatch, 1)
    assert _finetune(searched, out) == 130
    last = out / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    state["finetune"]["tensors"][next(iter(state["finetune"]["tensors"]))]["beta"] = torch.tensor(float("nan"))
    torch.save(state, last)
    capsys.readouterr()
    assert _finetune(searched, out, "--resume") == 2
    err = capsys.readouterr().err
    assert "holds NaN or infinite values" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_finetune_killed_with_sigkill_resumes_without_losing_or_repeating_an_epoch(searched: Path, whole: Path,
                                                                                   tmp_path: Path) -> None:
    """Kill the process (no cleanup runs) once the first epoch is checkpointed; the resume repeats the whole run."""
    out = tmp_path / "killed"
    resume = kill_when_checkpointed(_argv(searched, out), out / "checkpoints" / "last.pt")
    assert not (out / "weights.pt").exists()
    resumed = resume()
    assert resumed.returncode == 0, resumed.stderr
    assert [m["epoch"] for m in _metrics(out)] == [1, 2, 3, 4, 5]
    _assert_same_run(out, whole, atol=1e-6)  # floats: another process, same math
