"""The deployment path as an engineer runs it: Polygraphy's own CLI on the shipped folder, the
deployed parameter count, and `bench` (graph counts, --repeat, noise)."""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from onnxnas.cli import main
from onnxnas.deploy.onnx_counts import onnx_counts
from onnxnas.deploy.verify import TOLERANCES, _round_up
from onnxnas.timing.base import Measurement
from onnxnas.timing.noise import RepeatedMeasurement

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tiny.arch.json"
POLYGRAPHY = shutil.which("polygraphy", path=str(Path(sys.executable).parent)) or shutil.which("polygraphy")
TINY_DEPLOYED, TINY_PYTORCH, TINY_MACS = 38_520, 39_280, 1_849_216


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """Finalized tiny models (digits calibration, no latency measurement): precision -> (folder, stdout)."""
    root = tmp_path_factory.mktemp("shipped")
    folders = {}
    for precision in ("fp32", "int8"):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            assert main(["finalize", str(EXAMPLE), "--out", str(root / precision), "--precision", precision,
                         "--calib-data", "digits", "--no-measure", "--no-engine"]) == 0
        folders[precision] = (root / precision, out.getvalue())
    return folders


def _polygraphy(folder: Path, command: str) -> subprocess.CompletedProcess:
    argv = shlex.split(command)
    assert argv[0] == "polygraphy"
    return subprocess.run([POLYGRAPHY, *argv[1:]], cwd=folder, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.skipif(POLYGRAPHY is None, reason="the polygraphy CLI is not installed")
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_manifests_polygraphy_command_passes_as_written(precision: str, shipped: dict) -> None:
    folder, stdout = shipped[precision]
    manifest = json.loads((folder / "manifest.json").read_text())
    tol = manifest["verification"]["polygraphy"]
    check = manifest["verification"]["comparisons"][0]["outputs"]["output"]
    assert tol["atol"]["output"] == _round_up(TOLERANCES[precision] * check["peak"])
    assert check["atol"] <= tol["atol"]["output"] <= check["atol"] * (1 + 1e-5)
    assert (tol["rtol"], tol["check_error_stat"]) == (0.0, "max")
    command = manifest["verify_command"]
    assert command == ("polygraphy run model.onnx --onnxrt --load-inputs reference_inputs.json --load-outputs "
                       f"reference_outputs.json --atol output:{tol['atol']['output']:g} --rtol 0 --check-error-stat max")
    assert f"check with Polygraphy: (cd {folder} && {command})" in stdout
    result = _polygraphy(folder, command)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "PASSED" in result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.skipif(POLYGRAPHY is None, reason="the polygraphy CLI is not installed")
def test_polygraphys_default_tolerance_fails_int8(shipped: dict) -> None:
    """Why the command carries tolerances: the README's old command exits 1 on every int8 model."""
    folder, _ = shipped["int8"]
    old = "polygraphy run model.onnx --onnxrt --load-inputs reference_inputs.json --load-outputs reference_outputs.json"
    assert _polygraphy(folder, old).returncode == 1


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_manifest_reports_the_deployed_parameter_count(precision: str, shipped: dict) -> None:
    folder, stdout = shipped[precision]
    size = json.loads((folder / "manifest.json").read_text())["size"]
    assert (size["parameters"], size["parameters_before_bn_folding"], size["macs"]) == (TINY_DEPLOYED, TINY_PYTORCH, TINY_MACS)
    assert size["parameters_before_bn_folding"] - size["parameters"] == 760
    assert f"size: 38,520 parameters in model.onnx (BN folded; 39,280 in PyTorch), 1,849,216 MACs" in stdout
    assert onnx_counts(onnx.load(str(folder / "model.onnx"))).to_dict() == {"params": TINY_DEPLOYED, "macs": TINY_MACS}


def test_onnx_counts_of_a_hand_built_graph() -> None:
    """Conv 3->8 k3 s2 on 1x3x9x9 (pads 1: 5x5 out) then Gemm 8->4: the counts follow the formulas."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    init = [numpy_helper.from_array(np.ones(shape, np.float32), name) for name, shape in
            (("w", (8, 3, 3, 3)), ("b", (8,)), ("fw", (4, 8)), ("fb", (4,)), ("shape", (2,)))]
    init[-1] = numpy_helper.from_array(np.array([1, 8], np.int64), "shape")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["y"], ["p"]), helper.make_node("Reshape", ["p", "shape"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["z"], transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 9, 9])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4])], init)
    counts = onnx_counts(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert counts.params == 8 * 27 + 8 + 32 + 4  # the reshape target is not a parameter
    assert counts.macs == 8 * 5 * 5 * 27 + 4 * 8


def test_bench_prints_graph_counts_and_repeats(shipped: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder, _ = shipped["int8"]
    record_path = tmp_path / "bench.json"
    assert main(["bench", str(folder / "model.onnx"), "--device", "cpu", "--warmup", "1", "--min-runs", "5",
                 "--repeat", "2", "--out", str(record_path)]) == 0
    out = capsys.readouterr().out
    assert f"{folder / 'model.onnx'}: 38,520 parameters, 1,849,216 MACs (1.85 M; Conv/Gemm/MatMul" in out
    assert "median of 2 passes" in out
    record = json.loads(record_path.read_text())
    assert record["repeat"] == 2 and len(record["passes"]) == 2 and record["onnx"]["params"] == TINY_DEPLOYED
    assert record["median_us"] == pytest.approx(sum(p["median_us"] for p in record["passes"]) / 2)
    assert all(p["count"] >= 5 for p in record["passes"]) and record["protocol"]["runs"] == 5


def test_a_noisy_bench_says_so(shipped: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture) -> None:
    """The issue's outlier: one pass at 78.0 us against 62.5-63.7 us."""
    medians = iter([62.5, 78.0, 63.7])

    def fake_measure(backend, artefact, protocol) -> dict:
        m = next(medians)
        return {"median_us": m, "p10_us": m - 1, "p90_us": m + 2, "count": 400, "backend": "onnxruntime",
                "backend_version": "x", "protocol": protocol.to_dict(), "artefact": artefact.name}

    monkeypatch.setattr("onnxnas.cli.bench.measure", fake_measure)
    folder, _ = shipped["fp32"]
    assert main(["bench", str(folder / "model.onnx"), "--device", "cpu", "--repeat", "3",
                 "--out", str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    assert "median 63.7 us (median of 3 passes, 62.5-78.0 us, spread 24.3%, 1200 runs)" in out
    assert ("WARNING: noisy measurement: pass medians spread 24.3% (> 5%): 62.5, 78.0, 63.7 us; rerun on a quieter "
            "machine or with a larger --repeat") in out
    record = json.loads((tmp_path / "b.json").read_text())
    assert record["noisy"] is True and record["spread"] == pytest.approx(15.5 / 63.7)


def test_noise_verdict() -> None:
    quiet = RepeatedMeasurement((Measurement(63.0, 62.0, 65.0, 400), Measurement(63.5, 62.5, 66.0, 400)))
    assert quiet.noise == [] and quiet.median_us == 63.25 and quiet.spread == pytest.approx(0.5 / 63.25)
    tail = RepeatedMeasurement((Measurement(60.0, 59.0, 90.0, 96),))
    assert tail.noise == ["p90 / median reached 1.50 (> 1.25) within a pass"] and tail.to_dict()["noisy"]
    with pytest.raises(ValueError):
        RepeatedMeasurement(())


def test_round_up_never_tightens() -> None:
    assert _round_up(0.22407912345) == 0.224080 and _round_up(7.4e-05) == 7.4e-05 and _round_up(1.0000001) == 1.00001
