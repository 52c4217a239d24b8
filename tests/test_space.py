"""Search spaces: built-ins unroll to the right positions; malformed files name file and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onnxnas.errors import OnnxNasError
from onnxnas.space import load_space, space_from_dict


def test_gpunet1_positions_follow_table1() -> None:
    space = load_space("gpunet1")
    positions = space.positions()
    assert space.resolution == 288 and space.granularity == 32
    assert [p.stage for p in positions] == [0] * 2 + [1] * 3 + [2] * 3 + [3] * 2 + [4] * 5 + [5] * 6
    first_of_stage = [p for p in positions if p.layer_in_stage == 0]
    assert [(p.in_chs, p.out_chs, p.stride, p.in_hw) for p in first_of_stage] == [
        (24, 24, 1, 144), (24, 64, 2, 144), (64, 96, 2, 72), (96, 160, 2, 36), (160, 288, 1, 18), (288, 448, 2, 18)]
    irb = positions[10]  # first 288-channel IRB: widths 32..8*160 in steps of 32
    assert irb.hidden_choices == tuple(range(32, 8 * 160 + 1, 32))
    assert [p.skippable for p in positions[:5]] == [True, True, False, True, True]
    assert space.head.in_chs == 448 and space.head.hidden_chs == 1280


def test_tiny_and_mbv2_shapes() -> None:
    tiny = load_space("tiny").positions()
    assert [(p.in_chs, p.out_chs, p.in_hw) for p in tiny] == [
        (16, 16, 16), (16, 24, 16), (24, 24, 8), (24, 32, 8), (32, 32, 4), (32, 32, 4)]
    mbv2 = load_space("mbv2")
    positions = mbv2.positions()
    assert len(positions) == 17 and positions[-1].out_chs == 320
    assert positions[1].hidden_choices == (8, 16, 32, 40, 48, 56, 64, 80, 88, 96)  # 10%..100% of 6*16, on 8s
    assert not any(p.skippable for p in positions)


def test_space_hash_changes_with_content(tmp_path: Path) -> None:
    data = {"name": "s", "resolution": 16, "stem": {"out_chs": 8},
            "stages": [{"type": "conv", "out_chs": 8, "layers": 1}], "head": {"hidden_chs": 16}}
    a = space_from_dict(data, "a")
    data["stages"][0]["kernel_sizes"] = [3, 5]
    assert space_from_dict(data, "b").hash != a.hash


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["stages"][1].update(kernel_sizes=[4]), "stages[1].kernel_sizes: expected a non-empty list of odd"),
    (lambda d: d["stages"][0].update(type="mbconv"), "stages[0].type: expected one of conv, ds, fused_irb, irb"),
    (lambda d: d["stages"][0].update(colour="red"), "stages[0].colour: unknown field"),
    (lambda d: d.pop("resolution"), "resolution: required field is missing"),
    (lambda d: d["stem"].update(out_chs=0), "stem.out_chs: expected an integer in [1, 16384], got 0"),
    (lambda d: d["stages"][1].pop("max_expansion"), "stages[1]: an fused_irb stage needs exactly one of"),
])
def test_malformed_space_names_file_and_field(tmp_path: Path, mutate, message: str) -> None:
    data = json.loads(json.dumps(__import__("yaml").safe_load(
        (Path(__file__).parents[1] / "onnxnas/space/builtin/tiny.yaml").read_text())))
    mutate(data)
    path = tmp_path / "space.json"
    path.write_text(json.dumps(data))
    with pytest.raises(OnnxNasError) as info:
        load_space(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_unparseable_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages: [unclosed\n")
    with pytest.raises(OnnxNasError, match="malformed search-space file"):
        load_space(bad)
    with pytest.raises(OnnxNasError, match="not found"):
        load_space(tmp_path / "absent.yaml")


def test_the_mbv2_32_example_is_the_builtin_mbv2_at_32_px_with_10_classes() -> None:
    from onnxnas.fileio import parse_yaml

    root = Path(__file__).resolve().parents[1]
    example = parse_yaml((root / "examples" / "mbv2-32.yaml").read_text(), "space", "mbv2-32")
    builtin = parse_yaml((root / "onnxnas" / "space" / "builtin" / "mbv2.yaml").read_text(), "space", "mbv2")
    assert (example.pop("name"), example.pop("resolution"), example["head"].pop("num_classes")) == ("mbv2-32", 32, 10)
    for key in ("name", "resolution"):
        builtin.pop(key)
    builtin["head"].pop("num_classes")
    assert example == builtin
    space = load_space(str(root / "examples" / "mbv2-32.yaml"))
    assert space.resolution == 32 and space.name == "mbv2-32"
