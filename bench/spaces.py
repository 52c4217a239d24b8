"""Spaces the benchmarks share: the built-in mbv2 at a CPU-sized resolution, with 10 classes."""

from __future__ import annotations

import json
from pathlib import Path

from onnxnas.fileio import parse_yaml

ROOT = Path(__file__).resolve().parents[1]


def mbv2_at(resolution: int, work: Path, *, skippable: bool = False) -> Path:
    """mbv2's stages at ``resolution`` x ``resolution`` with a 10-class head (a space file in ``work``):
    the real MobileNetV2 layout at a size that trains on digits on two CPU cores.

    ``skippable`` adds elastic depth (every layer of a stage but its first may be skipped, the
    default of a space that does not list them), as PruNet's spaces have; mbv2 (UDC's space) has none.
    """
    text = (ROOT / "onnxnas/space/builtin/mbv2.yaml").read_text()
    data = parse_yaml(text, "space", "mbv2")
    name = f"mbv2-{resolution}" + ("-skip" if skippable else "")
    data.update(name=name, resolution=resolution)
    data["head"] = {**data["head"], "num_classes": 10}
    if skippable:
        for stage in data["stages"]:
            stage.pop("skippable", None)
    path = work / f"{name}.json"
    path.write_text(json.dumps(data))
    return path
