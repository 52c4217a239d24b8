"""`onnxnas finalize / verify / bench` end to end through the CLI, on the tiny example arch."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from onnxnas.arch import load_arch
from onnxnas.blocks import build_model
from onnxnas.cli import main
from onnxnas.deploy import verify as verify_module
from onnxnas.deploy.engine import tensorrt_available
from onnxnas.lut.key import arch_units
from onnxnas.lut.table import FORMAT_VERSION, LatencyTable, LutEntry
from onnxnas.stats import count_stats

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tiny.arch.json"
FAST = ["--warmup", "2", "--runs", "10"]


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    """The CLI's error: exactly one 'onnxnas: error:' line, last, no traceback (warnings may precede it)."""
    lines = err.strip().splitlines()
    assert "Traceback" not in err and sum(line.startswith("onnxnas: error:") for line in lines) == 1
    assert lines[-1].startswith("onnxnas: error:")
    return lines[-1]


def fake_lut(path: Path, arch_path: Path, block_us: float = 10.0, overhead_us: float = 4.0) -> float:
    """A table holding every unit of the arch; returns the prediction it must give."""
    keys = [u.key for u in arch_units(load_arch(arch_path), "fp32")]
    header = {"format_version": FORMAT_VERSION, "precision": "fp32", "protocol": {"batch_size": 1},
              "device": {"name": "cpu"}, "backend": {"name": "onnxruntime"},
              "calibration": {"per_call_overhead_us": overhead_us}}
    LatencyTable(header, {k: LutEntry(k, block_us, block_us, block_us, 10) for k in keys}).save(path)
    return len(keys) * block_us - (len(keys) - 1) * overhead_us


@pytest.fixture(scope="module")
def finalized(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float, str]:
    """One fp32 finalize of the example, with a LUT; (folder, LUT prediction, stderr)."""
    root = tmp_path_factory.mktemp("finalized")
    predicted = fake_lut(root / "lut.json", EXAMPLE)
    err = io.StringIO()  # module scope has no capsys
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert main(["finalize", str(EXAMPLE), "--out", str(root / "out"), "--lut", str(root / "lut.json"), "--no-engine",
                     *FAST]) == 0
    return root / "out", predicted, err.getvalue()


def test_finalize_writes_the_artefacts_and_a_complete_manifest(finalized: tuple[Path, float, str]) -> None:
    out, predicted, stderr = finalized
    assert "WARNING: weights are freshly initialized (random init, NOT TRAINED" in stderr
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "reference_inputs.json",
                                                    "reference_outputs.json"]
    manifest = json.loads((out / "manifest.json").read_text())
    arch = load_arch(EXAMPLE)
    onnx_bytes = (out / "model.onnx").read_bytes()
    assert manifest["weights"] == "random init (NOT TRAINED)"
    assert manifest["arch"]["hash"] == arch.hash and manifest["arch"]["spec"] == arch.to_dict()
    assert (manifest["precision"], manifest["opset"]) == ("fp32", 17)
    assert manifest["inputs"] == [{"name": "input", "shape": [1, 3, 32, 32], "dtype": "float32"}]
    assert manifest["outputs"] == [{"name": "output", "shape": [1, 10], "dtype": "float32"}]
    assert manifest["files"]["onnx"] == {"path": "model.onnx", "bytes": len(onnx_bytes),
                                         "sha256": hashlib.sha256(onnx_bytes).hexdigest()}
    assert manifest["files"]["engine"] is None and manifest["engine"]["built"] is False
    stats = count_stats(build_model(arch), arch.input_shape)
    size = manifest["size"]
    assert (size["parameters"], size["parameters_before_bn_folding"], size["macs"], size["onnx_bytes"]) == (38_520, stats.params, stats.macs, len(onnx_bytes))
    assert 0 < size["deflate_bytes"] < len(onnx_bytes) and size["entropy_bound_bytes"] == 4 * stats.params
    assert manifest["latency"]["lut"]["predicted_us"] == pytest.approx(predicted)
    assert manifest["latency"]["measured"]["median_us"] > 0
    assert manifest["latency"]["measured"]["backend"] == "onnxruntime"
    check = manifest["verification"]["comparisons"][0]
    assert (check["reference"], check["candidate"]) == ("pytorch", "onnxruntime")
    assert check["outputs"]["output"]["passed"] and check["outputs"]["output"]["max_abs"] <= 1e-4 * check["outputs"]["output"]["peak"]
    assert manifest["verification"]["tolerance"] == 1e-4
    assert set(manifest["software"]) >= {"onnxnas", "torch", "onnx", "onnxruntime", "polygraphy"}
    assert manifest["passes"]["batchnorms_folded"] == 11
    model = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert not {"BatchNormalization", "Identity"} & {n.op_type for n in model.graph.node}
    assert not any("/blocks.2/" in n.name or "/blocks.5/" in n.name for n in model.graph.node)  # the skips


def test_verify_passes_and_catches_a_changed_file(finalized: tuple[Path, float, str], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "verify", finalized[0])
    assert code == 0 and "onnxruntime vs pytorch [output]" in out and "ok" in out
    copy = Path(shutil.copytree(finalized[0], tmp_path / "copy"))
    model = onnx.load(str(copy / "model.onnx"))
    model.producer_name = "edited"
    onnx.save(model, str(copy / "model.onnx"))
    code, _, err = cli(capsys, "verify", copy)
    assert code == 2 and one_error_line(err) and "model.onnx differs from the file finalize wrote" in err


def test_bench_prints_the_measurement_beside_the_lut_prediction(finalized: tuple[Path, float, str],
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "bench", finalized[0] / "model.onnx", "--device", "cpu", *FAST)
    assert code == 0
    assert "median" in out and "with onnxruntime" in out
    assert f"LUT prediction {finalized[1]:.1f} us" in out and "measured / predicted" in out


def _outside_data_model(folder: Path) -> Path:
    """A valid-looking model whose only initializer lives in ../secret.bin."""
    (folder.parent / "secret.bin").write_bytes(np.ones(4, np.float32).tobytes())
    weight = numpy_helper.from_array(np.ones(4, np.float32), "w")
    onnx.external_data_helper.set_external_data(weight, location="../secret.bin")
    weight.ClearField("raw_data")
    weight.data_location = onnx.TensorProto.EXTERNAL
    graph = helper.make_graph([helper.make_node("Add", ["input", "w"], ["output"])], "g",
                              [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [4])], [weight])
    path = folder / "model.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return path


def test_verify_and_bench_refuse_external_data_outside_the_folder(finalized: tuple[Path, float, str], tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    folder = Path(shutil.copytree(finalized[0], tmp_path / "shipped"))
    path = _outside_data_model(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["onnx"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest["files"]["onnx"]["bytes"] = path.stat().st_size
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for argv in (["verify", folder], ["bench", path, "--device", "cpu", *FAST]):
        code, _, err = cli(capsys, *argv)
        assert code == 2 and one_error_line(err)
        assert "'../secret.bin' outside the model's folder; refused" in err


def test_failed_verification_leaves_no_artefacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(verify_module.TOLERANCES, "fp32", -1.0)  # nothing can pass
    previous = tmp_path / "previous"
    previous.mkdir()
    (previous / "manifest.json").write_text("{}")
    for out in (tmp_path / "fresh", previous):
        code, _, err = cli(capsys, "finalize", EXAMPLE, "--out", out, "--no-measure")
        assert code == 2 and one_error_line(err)
        assert "verification failed: output 'output' of onnxruntime diverges from pytorch" in err
        assert not (out / "model.onnx").exists()
    assert not (tmp_path / "fresh").exists()
    assert [p.name for p in previous.iterdir()] == ["manifest.json"] and (previous / "manifest.json").read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["previous"]  # no staging folder left behind


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_reduced_precisions_finalize_and_reverify(precision: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "finalize", EXAMPLE, "--out", tmp_path / "out", "--precision", precision,
                         "--no-measure", "--calib-samples", "8")
    assert code == 0, err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["precision"] == precision
    assert manifest["verification"]["tolerance"] == verify_module.TOLERANCES[precision]
    ops = {n.op_type for n in onnx.load(str(tmp_path / "out" / "model.onnx")).graph.node}
    # the Q/DQ layout follows the deployment: TensorRT's rules when it builds an engine, else ORT CPU's
    assert manifest["int8_flavor"] == (None if precision != "int8" else "tensorrt" if tensorrt_available() else "ort")
    if precision == "int8":
        assert "calibrated on synthetic data" in err and {"QuantizeLinear", "DequantizeLinear"} <= ops
        assert manifest["calibration"] == {"data": "synthetic", "samples": 8}
    else:
        assert manifest["inputs"][0]["dtype"] == "float16"
    code, out, _ = cli(capsys, "verify", tmp_path / "out")
    assert code == 0 and "verified" in out


def test_a_wider_checkpoint_ships_at_the_arch_widths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arch = load_arch(EXAMPLE)
    wide_layers = list(arch.layers)
    wide_layers[3] = type(arch.layers[3])(**{**arch.layers[3].__dict__, "hidden_chs": 128})
    wide = build_model(type(arch)(**{**arch.__dict__, "layers": tuple(wide_layers)}))
    kept = list(range(0, 128, 4)) + list(range(1, 128, 4)) + list(range(2, 128, 4))  # 96 of 128
    torch.save({"onnxnas_checkpoint": 1, "arch_hash": arch.hash, "state_dict": wide.state_dict(),
                "hidden_index": {"3": kept}}, tmp_path / "supernet.pt")
    code, _, err = cli(capsys, "finalize", EXAMPLE, "--weights", tmp_path / "supernet.pt", "--out", tmp_path / "out",
                       "--no-measure")
    assert code == 0, err
    assert "NOT TRAINED" not in err
    model = onnx.load(str(tmp_path / "out" / "model.onnx"))
    inits = {i.name: i.dims for i in model.graph.initializer}
    shapes = {n.name.split("/")[4]: list(inits[n.input[1]]) for n in model.graph.node
              if n.op_type == "Conv" and "/blocks.3/" in n.name}
    assert shapes == {"conv_pw.0": [96, 24, 1, 1], "conv_dw.0": [96, 1, 3, 3], "conv_reduce": [6, 96, 1, 1],
                      "conv_expand": [96, 6, 1, 1], "conv_pwl.0": [32, 96, 1, 1]}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["weights"] == f"checkpoint {tmp_path / 'supernet.pt'}"


@pytest.mark.parametrize("mutate, message", [
    (lambda a: a["layers"][1].update(hidden_chs="x"), r"\$.layers\[1\].hidden_chs: expected an integer, got 'x'"),
    (lambda a: a["layers"][0].update(type="transformer"), r"\$.layers\[0\].type: unknown block type 'transformer'"),
    (lambda a: a["layers"][1].update(hidden_chs=40), r"layer 1: hidden_chs 40 is not a searchable width"),
    (lambda a: a["layers"].__setitem__(1, {"type": "skip", "in_chs": 16, "out_chs": 24, "stride": 2}),
     r"\$.layers\[1\]: a skip must keep the shape"),
])
def test_bad_archs_are_one_line_errors(mutate, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads(EXAMPLE.read_text())
    mutate(data)
    (tmp_path / "arch.json").write_text(json.dumps(data))
    code, _, err = cli(capsys, "finalize", tmp_path / "arch.json", "--out", tmp_path / "out", "--no-measure")
    assert code == 2 and one_error_line(err)
    assert re.search(message, err)
    assert not (tmp_path / "out").exists()


def test_bad_checkpoints_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = build_model(load_arch(EXAMPLE)).state_dict()
    state["head.fc.weight"] = torch.zeros(10, 64)
    torch.save(state, tmp_path / "bad.pt")
    code, _, err = cli(capsys, "finalize", EXAMPLE, "--weights", tmp_path / "bad.pt", "--out", tmp_path / "out")
    assert code == 2 and one_error_line(err)
    assert "tensor 'head.fc.weight' has shape [10, 64], the arch needs [10, 128]" in err
    torch.save({"state_dict": {"x": _Exploit(tmp_path / "pwned")}}, tmp_path / "evil.pt")
    code, _, err = cli(capsys, "finalize", EXAMPLE, "--weights", tmp_path / "evil.pt", "--out", tmp_path / "out")
    assert code == 2 and "not a plain-tensor checkpoint" in err and not (tmp_path / "pwned").exists()


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_engine_without_tensorrt_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from onnxnas.deploy.engine import tensorrt_available

    if tensorrt_available():
        pytest.skip("TensorRT is present here")
    code, _, err = cli(capsys, "finalize", EXAMPLE, "--engine", "--out", tmp_path / "out")
    assert code == 2 and one_error_line(err) and "--engine needs TensorRT and a CUDA device" in err
