"""arch.json: round trip, JSON-path schema errors, and fit-the-space errors naming the layer."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from onnxnas.arch import arch_from_dict, check_fits_space, load_arch
from onnxnas.errors import OnnxNasError
from onnxnas.space import load_space
from onnxnas.space.choose import SKIP, gpunet1_arch, make_arch


@pytest.fixture(scope="module")
def gpunet1() -> dict:
    return gpunet1_arch(load_space("gpunet1")).to_dict()


def test_round_trip_is_exact(tmp_path: Path, gpunet1: dict) -> None:
    arch = arch_from_dict(gpunet1)
    path = arch.save(tmp_path / "arch.json")
    loaded = load_arch(path)
    assert loaded == arch and loaded.hash == arch.hash
    assert json.loads(path.read_text())["layers"][1] == {"type": "skip", "in_chs": 24, "out_chs": 24, "stride": 1}


def test_compression_fields_default_to_dense_fp32(gpunet1: dict) -> None:
    data = copy.deepcopy(gpunet1)
    data["layers"][2].update(weight_bits=4, nonzero_fraction=0.5)
    arch = arch_from_dict(data)
    assert arch.layers[2].weight_bits == 4 and arch.layers[2].nonzero_fraction == 0.5
    assert arch.layers[3].weight_bits == 32 and arch.layers[3].nonzero_fraction == 1.0
    assert arch.to_dict()["layers"][2]["weight_bits"] == 4 and "weight_bits" not in arch.to_dict()["layers"][3]


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(schema_version=9), "$.schema_version: unsupported schema version 9"),
    (lambda d: d["layers"][3].pop("hidden_chs"), "$.layers[3].hidden_chs: required for a fused_irb block"),
    (lambda d: d["layers"][3].update(stride="2"), "$.layers[3].stride: expected an integer, got '2'"),
    (lambda d: d["layers"][3].update(type="mbconv"), "$.layers[3].type: unknown block type 'mbconv'"),
    (lambda d: d["layers"][0].update(act="gelu"), "$.layers[0].act: unknown activation 'gelu'"),
    (lambda d: d["layers"][2].update(nonzero_fraction=1.5), "$.layers[2].nonzero_fraction: expected a number in (0, 1], got 1.5"),
    (lambda d: d["layers"][4].update(in_chs=32), "$.layers[4].in_chs: is 32 but the previous layer outputs 64"),
    (lambda d: d["head"].update(in_chs=1), "$.head.in_chs: is 1 but the last layer outputs 448"),
    (lambda d: d.update(extra=1), "$.extra: unknown field"),
])
def test_schema_errors_name_the_json_path(gpunet1: dict, mutate, message: str) -> None:
    data = copy.deepcopy(gpunet1)
    mutate(data)
    with pytest.raises(OnnxNasError) as info:
        arch_from_dict(data, "my.json")
    assert message in str(info.value) and "my.json" in str(info.value)


def test_arch_that_does_not_fit_its_space_names_the_layer() -> None:
    space = load_space("gpunet1")
    good = gpunet1_arch(space)
    check_fits_space(good, space)
    data = good.to_dict()
    data["layers"][3]["hidden_chs"] = 250  # off the 32-channel granularity
    with pytest.raises(OnnxNasError, match="layer 3: hidden_chs 250 is not a searchable width"):
        check_fits_space(arch_from_dict(data), space)
    data = good.to_dict()
    data["layers"][6]["kernel_size"] = 7
    with pytest.raises(OnnxNasError, match=r"layer 6: kernel 7 not in \[3, 5\]"):
        check_fits_space(arch_from_dict(data), space)
    tiny = load_space("tiny")
    choices = [{"kernel_size": 3}] + [{"kernel_size": 3, "se": False, "hidden_chs": 32}] * 5
    arch = make_arch(tiny, choices).to_dict()
    arch["layers"][3] = {"type": "skip", "in_chs": 24, "out_chs": 24, "stride": 1}  # 24->32 s2 position
    arch["layers"][4]["in_chs"] = 24
    with pytest.raises(OnnxNasError, match="layer 3: cannot be skipped"):
        check_fits_space(arch_from_dict(arch), tiny)
    with pytest.raises(ValueError, match="layer 1 is not skippable"):
        make_arch(tiny, [{"kernel_size": 3}, SKIP] + choices[2:])


def test_malformed_json_names_line(tmp_path: Path) -> None:
    path = tmp_path / "arch.json"
    path.write_text('{"schema_version": 1,\n "layers": [}\n')
    with pytest.raises(OnnxNasError, match=r"malformed arch.json at line 2"):
        load_arch(path)
