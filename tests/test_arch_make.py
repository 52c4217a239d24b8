"""`onnxnas arch make`: the widest, narrowest, random and named archs of a space."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onnxnas.arch import check_fits_space, load_arch
from onnxnas.cli import main
from onnxnas.space import load_space
from onnxnas.stats import arch_stats


def _make(tmp_path: Path, *flags: str) -> dict:
    out = tmp_path / "arch.json"
    assert main(["arch", "make", *flags, "--out", str(out)]) == 0
    arch = load_arch(out)
    check_fits_space(arch, load_space(arch.space), str(out))
    return {"arch": arch, **arch_stats(arch, None, None)}


def test_widest_tiny_is_the_peer_benchmarks_dense_start(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    made = _make(tmp_path, "--space", "tiny", "--widest")
    layers = made["arch"].layers
    assert [layer.kernel_size for layer in layers] == [5] * 6
    assert all(layer.se for layer in layers[1:]) and not any(layer.type == "skip" for layer in layers)
    assert [layer.hidden_chs for layer in layers[1:]] == [64, 96, 96, 128, 128]  # 4x the input, multiples of 16
    assert (made["params"], made["macs"]) == (139_610, 7_992_832)
    assert "wrote" in capsys.readouterr().out


def test_narrowest_tiny_skips_every_skippable_layer(tmp_path: Path) -> None:
    made = _make(tmp_path, "--space", "tiny", "--narrowest")
    assert [layer.type for layer in made["arch"].layers] == ["skip", "fused_irb", "skip", "irb", "skip", "skip"]
    assert (made["params"], made["macs"]) == (10_042, 384_512)


def test_dense_mbv2_is_timms_mobilenetv2(tmp_path: Path) -> None:
    made = _make(tmp_path, "--space", "mbv2", "--widest")
    assert (made["params"], made["macs"]) == (3_504_872, 300_774_272)
    assert all(layer.width_fraction == 1.0 for layer in made["arch"].layers)


def test_compression_fields_apply_to_every_layer(tmp_path: Path) -> None:
    made = _make(tmp_path, "--space", "mbv2", "--narrowest", "--weight-bits", "4", "--nonzero-fraction", "0.5")
    layers = made["arch"].layers
    assert {(layer.weight_bits, layer.nonzero_fraction) for layer in layers} == {(4, 0.5)}
    assert {layer.width_fraction for layer in layers if layer.type == "irb"} == {0.1}


def test_random_and_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["arch", "make", "--space", "tiny", "--random", "7"]) == 0
    first = capsys.readouterr().out
    assert main(["arch", "make", "--space", "tiny", "--random", "7"]) == 0
    assert capsys.readouterr().out == first and json.loads(first)["provenance"]["name"] == "random7"
    made = _make(tmp_path, "--space", "gpunet1", "--name", "gpunet1")
    assert made["params"] == 12_704_192


@pytest.mark.parametrize("flags, message", [
    (["--space", "tiny", "--name", "gpunet1"], "--name: gpunet1 is an arch of space 'gpunet1', not 'tiny' -- fix: pass --space gpunet1"),
    (["--space", "tiny", "--name", "resnet50"], "--name: unknown arch name 'resnet50' -- fix: use one of: gpunet1"),
    (["--space", "mbv2", "--widest", "--weight-bits", "5"],
     "--weight-bits: 5 is not offered by stage 0 of space 'mbv2' (options [1, 4, 8, 32]) -- fix: pass one of the options"),
    (["--space", "tiny", "--widest", "--nonzero-fraction", "0.5"],
     "--nonzero-fraction: 0.5 is not offered by stage 0 of space 'tiny' (options [1.0])"),
    (["--space", "tiny", "--widest", "--narrowest"], "not allowed with argument"),
])
def test_bad_requests_are_one_line(flags: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["arch", "make", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
