"""`onnxnas search --method udc`, `finetune`, `plot` end to end on tiny-udc: the guarantee, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from onnxnas.arch import check_fits_space, load_arch
from onnxnas.cli import main
from onnxnas.compress.codec import decode
from onnxnas.cost import LatencyCost, size_report
from onnxnas.deploy.checkpoint import fit_state_dict, load_checkpoint
from onnxnas.lut.table import LatencyTable
from onnxnas.search.udc.trainer import UdcTrainer
from onnxnas.space import load_space
from udc_fixtures import write_int8_table

SPACE = load_space("tiny-udc")
SMALL = ["--method", "udc", "--space", "tiny-udc", "--data", "digits", "--epochs", "3", "--warmup-epochs", "1",
         "--max-batches", "4", "--batch-size", "16", "--mc-samples", "2", "--device", "cpu"]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _search(out: Path, *extra: str) -> int:
    return main(["search", "--out", str(out), *SMALL, *extra])


def _metrics(out: Path) -> list[dict]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        line.pop("epoch_time_s")
    return lines


def test_size_target_is_met_and_recorded(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _search(out, "--target-size", "12KiB") == 0
    arch = load_arch(out / "arch.json")
    check_fits_space(arch, SPACE)
    prov = arch.provenance
    exact = size_report(arch).total_mib
    assert exact <= 12 / 1024
    assert prov["exact"]["size_mib"] == pytest.approx(exact)
    assert prov["targets"] == {"size_mib": 12 / 1024}
    assert prov["aims"]["size_mib"] == pytest.approx(12 / 1024 * 0.98)
    assert prov["predicted_size_bits"]["bound"] == pytest.approx(size_report(arch).total_bits)
    assert 0.9 < prov["predicted_size_bits"]["coded"] / prov["predicted_size_bits"]["bound"] < 1.2
    for move in prov["repair"]:
        assert move["size_mib"] > 0 and move["decision"] in ("op", "width", "bits", "sparsity")
    if prov["argmax_before_repair"]["size_mib"] > 12 / 1024:
        assert prov["repair"], "an argmax over the target must be repaired"
    for layer in arch.layers:
        if layer.type != "skip":
            assert layer.weight_bits in (2, 4, 8) and layer.nonzero_fraction in (0.25, 0.5, 0.75, 1.0)
    fit_state_dict(load_checkpoint(out / "weights.pt"), arch)  # finalize's loader takes the weights
    lines = _metrics(out)
    assert [m["phase"] for m in lines] == ["warmup", "search", "search"]
    assert all(m["steps"] == 2 and len(m["sampled"]["size_mib"]) == 2 for m in lines)  # 4 batches / 2 samples
    assert main(["plot", str(out)]) == 0
    assert (out / "udc_costs.png").stat().st_size > 1000 and (out / "udc_arch.png").stat().st_size > 1000


def test_resume_repeats_an_uninterrupted_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert _search(whole, "--target-size", "16KiB") == 0
    real = UdcTrainer.run_epoch

    def stop_at_2(self):
        if self.epoch == 2:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(UdcTrainer, "run_epoch", stop_at_2)
    assert _search(cut, "--target-size", "16KiB") == 130
    monkeypatch.setattr(UdcTrainer, "run_epoch", real)
    assert not (cut / "arch.json").exists()
    assert _search(cut, "--target-size", "16KiB", "--resume") == 0
    assert _metrics(cut) == _metrics(whole)
    assert load_arch(cut / "arch.json").to_dict() == load_arch(whole / "arch.json").to_dict()
    code = _search(cut, "--target-size", "15KiB", "--resume")
    assert code == 2


def test_resume_under_other_settings_names_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert _search(out, "--target-size", "16KiB") == 0
    assert _search(out, "--target-size", "16KiB", "--mc-samples", "4", "--resume") == 2
    assert "cannot resume: the checkpoint was made with --mc-samples 2, not 4" in capsys.readouterr().err


def test_size_and_latency_together(tmp_path: Path) -> None:
    lut = write_int8_table(SPACE, tmp_path / "int8.json")
    out = tmp_path / "run"
    assert _search(out, "--target-size", "14KiB", "--target-latency-us", "200", "--lut", str(lut)) == 0
    arch = load_arch(out / "arch.json")
    latency = LatencyCost(LatencyTable.load(lut), "int8").exact(arch)
    assert latency <= 200 and size_report(arch).total_mib <= 14 / 1024
    assert arch.provenance["predicted_latency_us"] == pytest.approx(latency)
    assert arch.provenance["lut"]["path"] == str(lut)


@pytest.mark.parametrize("extra, message", [
    (["--target-size", "4KiB"], "--target-size 0.0039 MiB: no configuration of space 'tiny-udc' meets it; the minimum "
                                "it can reach is 0.0062 MiB"),
    ([], "--method udc needs a hard constraint"),
    (["--target-size", "big"], "budget 'size=big': expected a positive finite number"),
    (["--target-latency-us", "100"], "--target-latency-us needs a latency table"),
    (["--target-size", "1MiB", "--space", "tiny"], "UDC searches expansion x width_fractions"),
    (["--target-size", "1MiB", "--epochs", "1"], "--epochs (1) must exceed --warmup-epochs (1)"),
])
def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str) -> None:
    assert _search(tmp_path / "run", *extra) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_latency_target_needs_an_int8_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    lut = write_int8_table(SPACE, tmp_path / "fp32.json", precision="fp32")
    assert _search(tmp_path / "run", "--target-latency-us", "300", "--lut", str(lut)) == 2
    assert "needs a int8 latency table, this one is fp32" in capsys.readouterr().err


def test_unreachable_latency_names_the_minimum(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    lut = write_int8_table(SPACE, tmp_path / "int8.json")
    assert _search(tmp_path / "run", "--target-latency-us", "20", "--lut", str(lut)) == 2
    assert "--target-latency-us 20.0 us: no configuration of space 'tiny-udc' meets it; the minimum it can reach is" \
        in capsys.readouterr().err


def test_finetune_writes_masked_weights_finalize_reads(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _search(out, "--target-size", "12KiB") == 0
    ft = tmp_path / "ft"
    assert main(["finetune", str(out / "arch.json"), "--weights", str(out / "weights.pt"), "--data", "digits",
                 "--epochs", "3", "--max-batches", "3", "--batch-size", "16", "--out", str(ft)]) == 0
    arch = load_arch(out / "arch.json")
    checkpoint = load_checkpoint(ft / "weights.pt")
    state = fit_state_dict(checkpoint, arch)
    for i, layer in enumerate(arch.layers):
        if layer.type == "skip":
            continue
        for name, tensor in state.items():
            if name.startswith(f"blocks.{i}.") and tensor.dim() > 1:
                assert int(tensor.count_nonzero()) <= round(layer.nonzero_fraction * tensor.numel()), name
                r = checkpoint.quantizers["quant_ranges"][name]
                levels = tensor / (r / (2 ** (layer.weight_bits - 1) - 1))  # on the trained b-bit grid, exactly
                assert torch.allclose(levels, levels.round(), atol=1e-4), name
                assert levels.abs().max() <= 2 ** (layer.weight_bits - 1) - 1 + 1e-4, name
    result = json.loads((ft / "result.json").read_text())
    assert result["stages"] == [1, 1, 1] and 0.0 <= result["val_accuracy"] <= 1.0
    assert set(result["quant_ranges"]) == set(checkpoint.quantizers["quant_ranges"])
    assert result["number_format"] == "grid"
    assert result["val_accuracy"] == result["val_accuracy_training_format"]  # what trained is what ships
    assert [json.loads(line)["stage"] for line in (ft / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_finetune_refuses_an_uncompressed_arch(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    arch = Path(__file__).parents[1] / "examples" / "tiny.arch.json"
    assert main(["finetune", str(arch), "--weights", str(arch), "--out", str(tmp_path / "ft")]) == 2
    assert "nothing to finetune" in capsys.readouterr().err


@pytest.mark.parametrize("field, value, message", [
    ("weight_bits", 3, "layer 1: weight_bits 3 not offered (options [2, 4, 8])"),
    ("nonzero_fraction", 0.3, "layer 1: nonzero_fraction 0.3 not offered (options [0.25, 0.5, 0.75, 1.0])"),
    ("width_fraction", 0.6, "layer 1: width_fraction 0.6 not offered"),
])
def test_finetune_refuses_options_the_space_lacks(tmp_path: Path, capsys: pytest.CaptureFixture, field: str,
                                                  value: float, message: str) -> None:
    from onnxnas.search.udc.options import layer_options
    from onnxnas.search.udc.repair import Configs

    options = layer_options(SPACE)
    config = [{"op": 0, "width": min(1, o.count("width") - 1), "bits": 1, "sparsity": 1} for o in options]
    arch = Configs(SPACE, options, 10).arch(config).to_dict()
    arch["layers"][1][field] = value
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(arch))
    assert main(["finetune", str(path), "--weights", str(path), "--out", str(tmp_path / "ft")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_finalize_writes_the_predicted_coded_size_on_the_trained_grids(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _search(out, "--target-size", "12KiB") == 0
    arch = load_arch(out / "arch.json")
    checkpoint = load_checkpoint(out / "weights.pt")
    ranges = checkpoint.quantizers["quant_ranges"]
    quantized = {i for i, layer in enumerate(arch.layers) if layer.type != "skip" and layer.weight_bits < 32}
    assert {int(name.split(".")[1]) for name in ranges} == quantized
    assert main(["finalize", str(out / "arch.json"), "--weights", str(out / "weights.pt"), "--precision", "int8",
                 "--calib-data", "digits", "--out", str(tmp_path / "deploy")]) == 0
    manifest = json.loads((tmp_path / "deploy" / "manifest.json").read_text())
    shipped = decode((tmp_path / "deploy" / "compressed.bin").read_bytes())
    # the same integers, coded the same way; only the tensor names in the headers differ (ONNX's vs the parameters')
    renamed = sum(len(n) - len(n.replace("_folded_int8", "").replace("_int8", "")) for n in shipped)
    assert manifest["size"]["compressed"]["coded_bytes"] == arch.provenance["predicted_size_bits"]["coded"] // 8 + renamed
    assert manifest["size"]["compressed"]["bound_bits"] == pytest.approx(arch.provenance["predicted_size_bits"]["bound"])
