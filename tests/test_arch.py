"""arch.json: round trip, JSON-path schema errors, and fit-the-space errors naming the layer."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from onnxnas.arch import arch_from_dict, check_filter_ops, check_fits_space, load_arch
from onnxnas.blocks.builder import build_model
from onnxnas.cli import main
from onnxnas.errors import OnnxNasError
from onnxnas.space import load_space
from onnxnas.space.choose import SKIP, gpunet1_arch, make_arch
from onnxnas.stats import count_stats


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


# ---- compression fields, filter groups, derived archs, arch stats ------------------------
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def mbv2() -> dict:
    return json.loads((EXAMPLES / "mbv2-int8.arch.json").read_text())


@pytest.mark.parametrize("field, value, message", [
    ("weight_bits", 2, "layer 3: weight_bits 2 not offered (options [1, 4, 8, 32])"),
    ("nonzero_fraction", 0.55, "layer 3: nonzero_fraction 0.55 not offered (options [0.1, 0.2,"),
    ("width_fraction", 0.25, "layer 3: width_fraction 0.25 not offered (options [0.1, 0.2,"),
])
def test_compression_options_must_be_the_spaces(mbv2: dict, field: str, value: float, message: str) -> None:
    space = load_space("mbv2")
    check_fits_space(arch_from_dict(mbv2), space)
    data = copy.deepcopy(mbv2)
    data["layers"][3][field] = value
    with pytest.raises(OnnxNasError) as info:
        check_fits_space(arch_from_dict(data), space, "my.json")
    assert str(info.value).startswith(f"my.json: {message}")


def _with_groups(data: dict, where: str, groups: dict) -> dict:
    data = copy.deepcopy(data)
    (data[where] if where in ("stem", "head") else data["layers"][int(where)])["filter_groups"] = groups
    return data


def test_filter_groups_round_trip_on_stem_layers_and_head(mbv2: dict) -> None:
    pw = [{"filters": 48, "weight_bits": 2, "act_bits": 2}, {"filters": 48, "weight_bits": 8, "act_bits": 8}]
    data = _with_groups(_with_groups(_with_groups(mbv2, "1", {"conv_pw": pw, "conv_pwl": [{"filters": 24, "weight_bits": 4, "act_bits": 4}]}),
                                     "stem", {"conv": [{"filters": 32, "weight_bits": 8, "act_bits": 8}]}),
                        "head", {"conv": [{"filters": 1280, "weight_bits": 4, "act_bits": 8}]})
    arch = arch_from_dict(data)
    assert arch.layers[1].groups_of("conv_pw")[0].filters == 48 and arch.layers[1].groups_of("conv_dw") == ()
    assert arch.head.groups_of("conv")[0].weight_bits == 4
    assert arch_from_dict(arch.to_dict()) == arch and arch.to_dict()["layers"][1]["filter_groups"]["conv_pw"] == pw
    check_fits_space(arch, load_space("mbv2"))
    check_filter_ops(arch, [(2, 2), (4, 4), (4, 8), (8, 8)])
    with pytest.raises(OnnxNasError, match=r"\$.layers\[1\].filter_groups.conv_pw: groups must follow the --ops order"):
        check_filter_ops(arch, [(8, 8), (2, 2), (4, 4), (4, 8)])
    with pytest.raises(OnnxNasError, match=r"\$.head.filter_groups.conv: op 4:8 is not in --ops 2:2,4:4,8:8"):
        check_filter_ops(arch, [(2, 2), (4, 4), (8, 8)])


@pytest.mark.parametrize("where, groups, message", [
    ("1", {"conv_pw": [{"filters": 40, "weight_bits": 2, "act_bits": 2}]},
     "$.layers[1].filter_groups.conv_pw: groups sum to 40 filters, but conv_pw has 96"),
    ("1", {"conv_pw": []}, "$.layers[1].filter_groups.conv_pw: expected a list of 1 to"),
    ("1", {"conv_exp": [{"filters": 96, "weight_bits": 2, "act_bits": 2}]},
     "$.layers[1].filter_groups.conv_exp: no conv 'conv_exp' in a irb block -- fix: use the conv names of a irb block: conv_pw, conv_dw, conv_pwl"),
    ("0", {"conv_dw": [{"filters": 32, "weight_bits": 0, "act_bits": 2}]},
     "$.layers[0].filter_groups.conv_dw[0].weight_bits: expected an integer in [1, 32], got 0"),
    ("0", {"conv_pwl": [{"filters": 16, "weight_bits": 8, "act_bits": 33}]},
     "$.layers[0].filter_groups.conv_pwl[0].act_bits: expected an integer in [1, 32], got 33"),
    ("0", {"conv_pwl": [{"filters": 0, "weight_bits": 8, "act_bits": 8}, {"filters": 16, "weight_bits": 8, "act_bits": 8}]},
     "$.layers[0].filter_groups.conv_pwl[0].filters: expected an integer in [1, 16384], got 0"),
    ("head", {"conv": [{"filters": 1000, "weight_bits": 8, "act_bits": 8}]},
     "$.head.filter_groups.conv: groups sum to 1000 filters, but conv has 1280"),
])
def test_bad_filter_groups_name_the_conv(mbv2: dict, where: str, groups: dict, message: str) -> None:
    with pytest.raises(OnnxNasError) as info:
        arch_from_dict(_with_groups(mbv2, where, groups), "my.json")
    assert str(info.value).startswith(f"my.json: {message}")


def _derived_tiny() -> dict:
    """tiny with NeuralScale-like widths: stem 24, the residual pair of layers 3-5 at 40."""
    data = make_arch(load_space("tiny"), [{"kernel_size": 3}] + [{"kernel_size": 3, "se": False, "hidden_chs": 32}] * 5).to_dict()
    data["derived_from"] = data.pop("space")
    data["stem"]["out_chs"] = 24
    widths = [(24, 24), (24, 20), (20, 20), (20, 40), (40, 40), (40, 40)]
    for layer, (cin, cout) in zip(data["layers"], widths):
        layer.update(in_chs=cin, out_chs=cout)
    data["head"]["in_chs"] = 40
    return data


def test_derived_arch_is_checked_structurally_not_for_widths(tmp_path: Path) -> None:
    space = load_space("tiny")
    arch = arch_from_dict(_derived_tiny())
    check_fits_space(arch, space)
    assert arch.derived and arch.space == "tiny"
    saved = json.loads(arch.save(tmp_path / "a.json").read_text())
    assert saved["derived_from"] == "tiny" and "space" not in saved and load_arch(tmp_path / "a.json") == arch
    dropped = _derived_tiny()
    dropped["layers"][4]["out_chs"], dropped["layers"][5]["in_chs"] = 48, 48
    with pytest.raises(OnnxNasError, match="layer 4: in_chs 40 != out_chs 48 would silently drop the residual add"):
        check_fits_space(arch_from_dict(dropped), space)
    strided = _derived_tiny()
    strided["layers"][2]["stride"] = 2
    with pytest.raises(OnnxNasError, match="layer 2: stride 2, the space has 1"):
        check_fits_space(arch_from_dict(strided), space)
    both = _derived_tiny()
    both["space"] = "tiny"
    with pytest.raises(OnnxNasError, match=r"\$.space: give exactly one of 'space'"):
        arch_from_dict(both)
    fitting = _derived_tiny()
    fitting["space"] = fitting.pop("derived_from")
    with pytest.raises(OnnxNasError, match="layer stem: .* differs from the space's stem"):
        check_fits_space(arch_from_dict(fitting), space)


def test_arch_stats_prints_every_cost(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["arch", "stats", str(EXAMPLES / "mbv2-int8.arch.json"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["params"], result["deployed_params"], result["macs"], result["num_weights"]) == \
        (3_504_872, 3_487_816, 300_774_272, 3_469_760)
    assert result["size_mib"] == pytest.approx(3.309021) and result["bops"] == pytest.approx(33_443_224_222, abs=1)
    assert main(["arch", "stats", str(EXAMPLES / "mbv2-int8.arch.json")]) == 0
    text = capsys.readouterr().out
    assert "  size bound       3.31 MiB (27,758,080 bits, 3,469,760 weights)" in text
    assert "  params           3,504,872 (3.505 M)" in text
    derived = tmp_path / "derived.json"
    derived.write_text(json.dumps(_derived_tiny()))
    lut = EXAMPLES.parent / "latency_tables" / "tiny-cpu-onnxruntime-fp32.json"
    assert main(["arch", "stats", str(derived), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["derived"] is True and result["params"] == count_stats(build_model(load_arch(derived)), (1, 3, 32, 32)).params
    assert main(["arch", "stats", str(derived), "--lut", str(lut)]) == 2  # widths the table never timed
    assert "latency table lacks 7 key(s): conv:1x3x32x32:o24:k3:s2" in capsys.readouterr().err


def test_arch_stats_refuses_an_int8_arch_with_an_fp32_table(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = json.loads((EXAMPLES / "tiny.arch.json").read_text())
    data["layers"][0]["weight_bits"] = 8
    data["space"], data["space_hash"] = "tiny-custom", ""  # not built in: no option check, only the LUT's
    path = tmp_path / "int8.json"
    path.write_text(json.dumps(data))
    lut = tmp_path / "lut.json"
    table = json.loads((EXAMPLES.parent / "latency_tables" / "tiny-cpu-onnxruntime-fp32.json").read_text())
    table["header"]["space"]["name"] = "tiny-custom"
    lut.write_text(json.dumps(table))
    assert main(["arch", "stats", str(path), "--lut", str(lut)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.endswith("a int8 arch needs a int8 latency table, this one is fp32 -- fix: build one with: onnxnas "
                        "build-lut --device cpu --space tiny-custom --backend onnxruntime --precision int8")
