"""finalize's top-1 agreement of a filter-level INT8 artefact with PyTorch's fake-quantized model (design §12)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onnxnas.arch import load_arch
from onnxnas.cli import main
from onnxnas.deploy.grids import WeightGrid
from onnxnas.deploy.verify import AGREEMENT_THRESHOLD
from onnxnas.search.filterlevel import reference

TINY = Path(__file__).resolve().parents[1] / "examples" / "tiny.arch.json"
DIGITS_VAL = 179  # images in the digits validation split


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("search")
    assert main(["search", "--method", "filterlevel", "--arch", str(TINY), "--out", str(out), "--data", "digits",
                 "--epochs", "3", "--max-batches", "8", "--batch-size", "32", "--final-samples", "2", "--samples", "2",
                 "--budget-bops", "0.5x"]) == 0
    return out


def finalize(searched: Path, out: Path) -> int:
    return main(["finalize", str(searched / "arch.json"), "--weights", str(searched / "weights.pt"), "--precision",
                 "int8", "--calib-data", "digits", "--no-measure", "--no-engine", "--out", str(out)])


@pytest.mark.slow
def test_int8_artefact_agrees_with_the_fake_quantized_net(searched: Path, tmp_path: Path) -> None:
    assert finalize(searched, tmp_path / "out") == 0
    agreement = json.loads((tmp_path / "out" / "manifest.json").read_text())["verification"]["top1_agreement"]
    assert agreement["threshold"] == AGREEMENT_THRESHOLD == 0.95
    assert (agreement["data"], agreement["images"]) == ("digits", DIGITS_VAL)
    assert agreement["agreement"] == pytest.approx(agreement["agreeing"] / DIGITS_VAL)
    assert agreement["agreement"] >= 0.95 and agreement["passed"] is True
    assert (agreement["reference"], agreement["candidate"]) == ("pytorch-fake-quantized", "onnxruntime")


@pytest.mark.slow
def test_damaged_grids_fail_finalize_naming_agreement_and_threshold(
        searched: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    real = reference.quantized_reference

    def damaged(module, bits, grids):  # type: ignore[no-untyped-def]  # ranges 20x too small: weights clip
        return real(module, bits, {k: WeightGrid(g.range * 0.05, g.bits) for k, g in grids.items()})

    monkeypatch.setattr(reference, "quantized_reference", damaged)
    assert finalize(searched, tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "top-1 agreement of onnxruntime with pytorch-fake-quantized is" in err
    assert f"/{DIGITS_VAL} digits images), below the threshold 95%" in err
    assert not (tmp_path / "out").exists()


def test_plain_archs_skip_the_check(tmp_path: Path) -> None:
    """No filter groups (the source arch): nothing to compare, no images loaded, None in the manifest."""
    assert reference.verify_fake_quantized(load_arch(TINY), None, {}, None, [], tmp_path, "int8",  # type: ignore[arg-type]
                                           "digits") is None
