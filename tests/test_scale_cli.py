"""`onnxnas scale` end to end on tiny/digits (short runs), resume, derived archs in every command, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from onnxnas.arch import load_arch
from onnxnas.cli import main
from onnxnas.cost import arch_counts

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "examples" / "tiny.arch.json")
LUT = ROOT / "latency_tables" / "tiny-cpu-onnxruntime-fp32.json"
FAST = ["--pretrain-epochs", "1", "--max-batches", "2", "--prune-every", "2", "--batch-size", "16"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two iterations, projection residuals, three parameter budgets and a MAC budget."""
    out = tmp_path_factory.mktemp("scale") / "run"
    torch.set_num_threads(1)
    assert main(["scale", TINY, "--budgets", "params=20K,30K,50K", "--budget", "macs=1.5e6", "--iterations", "2",
                 "--residual", "projection", "--out", str(out), *FAST]) == 0
    return out


@pytest.mark.slow
def test_outputs_per_budget(run: Path) -> None:
    summary = json.loads((run / "summary.json").read_text())
    assert summary["iteration"] == 2
    assert [b["budget"] for b in summary["budgets"]] == ["macs=1.5e+06", "params=20000", "params=30000", "params=50000"]
    for item in summary["budgets"]:
        for method in ("neuralscale", "uniform"):
            arch = load_arch(item[method]["arch"])
            assert arch.derived and arch.provenance["method"] == ("neuralscale" if method == "neuralscale" else "uniform")
            counts = arch_counts(arch)
            kind, limit = item["budget"].split("=")
            reached = counts.params if kind == "params" else counts.macs
            assert reached == item[method]["cost"] <= float(limit)
    ns = load_arch(summary["budgets"][2]["neuralscale"]["arch"]).provenance["neuralscale"]
    assert set(ns) >= {"tau", "rounding", "variables", "budget", "cost_reached", "overrides", "extrapolated"}
    assert [v["layers"] for v in ns["variables"]] == [["stem"], ["layers.0"], ["layers.1"], ["layers.3"], ["layers.4"], ["head"]]
    assert (run / "descent" / "iter_1.csv").exists() and (run / "fits" / "iter_2.json").exists()
    for png in ("fit.png", "widths.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [1, 2]
    # iteration 2 starts at fit 1's widths for the input network's own parameter count (39,280)
    start = json.loads(lines[1])["start_widths"]
    own = arch_counts(load_arch(TINY)).params
    from onnxnas.scale.variables import WidthPlan
    assert arch_counts(WidthPlan.of(load_arch(TINY), "projection").apply(start)).params <= own


@pytest.mark.slow
def test_resume_runs_only_the_new_iteration(run: Path, capsys: pytest.CaptureFixture) -> None:
    first = (run / "descent" / "iter_1.csv").read_bytes()
    assert main(["scale", TINY, "--budget", "params=30000", "--iterations", "2", "--residual", "projection",
                 "--out", str(run), *FAST]) == 2
    assert "already holds a scale run -- fix: pass --resume" in capsys.readouterr().err
    assert main(["scale", TINY, "--budget", "params=30000", "--iterations", "2", "--residual", "tied", "--resume",
                 "--out", str(run), *FAST]) == 2
    assert "--resume with other settings than the run's (residual)" in capsys.readouterr().err
    assert main(["scale", TINY, "--budget", "params=30000", "--iterations", "3", "--use-iteration", "1", "--resume",
                 "--residual", "projection", "--out", str(run), *FAST]) == 0
    out = capsys.readouterr().out
    assert "iteration 3:" in out and "iteration 1:" not in out and "iteration 2:" not in out
    assert (run / "descent" / "iter_1.csv").read_bytes() == first
    assert json.loads((run / "summary.json").read_text())["iteration"] == 1


@pytest.mark.slow
def test_derived_outputs_work_in_every_command(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    summary = json.loads((run / "summary.json").read_text())
    paths = [b["neuralscale"]["arch"] for b in summary["budgets"]]
    arch = next(p for p in paths if any(layer.shortcut for layer in load_arch(p).layers))  # a projection shortcut
    assert main(["arch", "stats", arch, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["derived"] is True and stats["params"] == arch_counts(load_arch(arch)).params
    assert main(["train", arch, "--epochs", "1", "--max-batches", "2", "--out", str(tmp_path / "train")]) == 0
    assert main(["finalize", arch, "--weights", str(tmp_path / "train" / "weights.pt"), "--out", str(tmp_path / "fp32")]) == 0
    assert main(["finalize", arch, "--precision", "int8", "--calib-data", "digits", "--out", str(tmp_path / "int8")]) == 0
    assert main(["verify", str(tmp_path / "int8")]) == 0
    import onnx
    ops = [node.op_type for node in onnx.load(str(tmp_path / "fp32" / "model.onnx")).graph.node]
    assert "BatchNormalization" not in ops and ops.count("Add") == 1  # the projected add, BN folded into its conv


def _table_copy(tmp_path: Path, **header: object) -> Path:
    data = json.loads(LUT.read_text())
    for key, value in header.items():
        data["header"][key] = value
    path = tmp_path / "lut.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("flags, message", [
    (["--budget", "flops=1e6"], "--budget: unknown budget kind 'flops' -- fix: use one of: bops, deployed-params"),
    (["--budget", "latency-us=100"], "--budget: a latency budget needs a latency table -- fix: pass --lut FILE"),
    (["--budget", "params=1000"], "budget params=1000 is below the smallest legal network (6,196 with every width at 8)"),
    (["--budget", "params=5e6"], "budget params=5e+06 is above the largest legal network (2.099e+06 with every width"),
    (["--budgets", "params=1K,zz"], "--budgets: budget 'params=zz': expected a positive finite number"),
    ([], "no budget given"),
    (["--budget", "latency-us=100", "--lut", "OTHER_SPACE"], "table is for space 'mbv2' (hash 0123), the arch for 'tiny'"),
    (["--budget", "latency-us=100", "--lut", "INT8"], "a fp32 arch needs a fp32 latency table, this one is int8"),
])
def test_bad_input_is_one_line(flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    if "OTHER_SPACE" in flags:
        flags[flags.index("OTHER_SPACE")] = str(_table_copy(tmp_path, space={"name": "mbv2", "hash": "0123", "resolution": 224}))
    if "INT8" in flags:
        flags[flags.index("INT8")] = str(_table_copy(tmp_path, precision="int8"))
    assert main(["scale", TINY, "--out", str(tmp_path / "out"), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "state.json").exists()


def test_a_latency_budget_on_a_space_file_arch_needs_that_space(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from onnxnas.fileio import parse_yaml

    space = parse_yaml((ROOT / "onnxnas" / "space" / "builtin" / "tiny.yaml").read_text(), "space", "tiny")
    space["name"] = "tinyfile"
    space_file = tmp_path / "tinyfile.json"
    space_file.write_text(json.dumps(space))
    arch = tmp_path / "arch.json"
    assert main(["arch", "make", "--space", str(space_file), "--widest", "--out", str(arch)]) == 0
    from onnxnas.space import load_space

    lut = _table_copy(tmp_path, space={"name": "tinyfile", "hash": load_space(str(space_file)).hash, "resolution": 32})
    capsys.readouterr()
    assert main(["scale", str(arch), "--budget", "latency-us=100", "--lut", str(lut), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "'tinyfile' is not built in -- fix: pass its space file with --space" in err and len(err.strip().splitlines()) == 1
    assert main(["scale", str(arch), "--space", str(tmp_path / "missing.json"), "--budget", "latency-us=100",
                 "--lut", str(lut), "--out", str(tmp_path / "out")]) == 2
    assert "missing.json" in capsys.readouterr().err
