"""Load and validate a search space from a built-in name or a JSON/YAML file.

Every error names the file and the field (``stages[2].kernel_sizes``) and says what is
expected, so a user can fix the file without reading this code.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from onnxnas.blocks.spec import ACTIVATIONS, BLOCK_TYPES, IRB_TYPES, HeadSpec
from onnxnas.errors import OnnxNasError, choice_error
from onnxnas.fileio import parse_json, parse_yaml, read_text
from onnxnas.schema import MAX_CHANNELS, MAX_CLASSES, MAX_KERNEL, MAX_LAYERS, MAX_RESOLUTION, MAX_STRIDE, Fields
from onnxnas.space.spec import SearchSpace, StageSpec, StemSpec

BUILTIN_SPACES = ("gpunet1", "mbv2", "tiny", "tiny-udc")
STAGE_TYPES = tuple(t for t in BLOCK_TYPES if t != "skip")


def _is_kernel(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0 and v % 2 == 1


def _is_fraction(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1


def _stage(data: Any, path: str, source: str) -> StageSpec:
    f = Fields(data, path, source)
    stage = StageSpec(
        type=f.string("type", choices=STAGE_TYPES),
        out_chs=f.integer("out_chs", high=MAX_CHANNELS),
        layers=f.integer("layers", high=MAX_LAYERS),
        stride=f.integer("stride", 1, high=MAX_STRIDE),
        kernel_sizes=f.items("kernel_sizes", _is_kernel, "odd positive integers", (3,)),
        act=f.string("act", "relu", choices=ACTIVATIONS),
        se=f.items("se", lambda v: isinstance(v, bool) or v in (0, 1), "booleans", (False,)),
        max_expansion=f.number("max_expansion", None, low=0.0, high=64, low_open=True),
        expansion=f.number("expansion", None, low=0.0, high=64, low_open=True),
        width_fractions=f.items("width_fractions", _is_fraction, "fractions in (0, 1]", (1.0,)),
        weight_bits=f.items("weight_bits", lambda v: v in (1, 2, 4, 8, 16, 32), "bitwidths in 1,2,4,8,16,32", (32,)),
        nonzero_fractions=f.items("nonzero_fractions", _is_fraction, "fractions in (0, 1]", (1.0,)),
        skippable=f.get("skippable", None),
    )
    f.done()
    stage = StageSpec(**{**stage.__dict__, "se": tuple(bool(v) for v in stage.se)})
    if stage.skippable is not None:
        ok = isinstance(stage.skippable, list) and all(isinstance(i, int) and 0 <= i < stage.layers for i in stage.skippable)
        if not ok:
            raise f.fail("skippable", f"expected a list of layer indices in [0, {stage.layers}), got {stage.skippable!r}")
        stage = StageSpec(**{**stage.__dict__, "skippable": tuple(stage.skippable)})
    if stage.type in ("fused_irb", "irb") and (stage.max_expansion is None) == (stage.expansion is None):
        raise OnnxNasError(f"{path}: an {stage.type} stage needs exactly one of max_expansion or expansion",
                           where=source, fix="set max_expansion (PruNet widths) or expansion (+ width_fractions)")
    return stage


def space_from_dict(data: Any, source: str) -> SearchSpace:
    """Validate a parsed space document; ``source`` names the file in errors."""
    top = Fields(data, "$", source)
    stem = top.object("stem")
    head = top.object("head")
    stages = top.list("stages", min_items=1, max_items=MAX_LAYERS)
    space = SearchSpace(
        name=top.identifier("name"),
        resolution=top.integer("resolution", high=MAX_RESOLUTION),
        in_chs=top.integer("in_chs", 3, high=MAX_CHANNELS),
        granularity=top.integer("granularity", 8, high=MAX_CHANNELS),
        stem=StemSpec(out_chs=stem.integer("out_chs", high=MAX_CHANNELS),
                      kernel_size=stem.integer("kernel_size", 3, high=MAX_KERNEL),
                      stride=stem.integer("stride", 2, high=MAX_STRIDE), act=stem.string("act", "relu", choices=ACTIVATIONS)),
        stages=tuple(_stage(s, f"$.stages[{i}]", source) for i, s in enumerate(stages)),
        head=HeadSpec(in_chs=0, hidden_chs=head.integer("hidden_chs", high=MAX_CHANNELS),
                      num_classes=head.integer("num_classes", 1000, high=MAX_CLASSES),
                      act=head.string("act", "relu", choices=ACTIVATIONS)),
    )
    for fields in (stem, head, top):
        fields.done()
    head_spec = HeadSpec(space.last_chs, space.head.hidden_chs, space.head.num_classes, space.head.act)
    space = SearchSpace(**{**space.__dict__, "head": head_spec})
    for position in space.positions():
        if position.type in IRB_TYPES and not position.hidden_choices:
            raise OnnxNasError(f"$.stages[{position.stage}]: no hidden width fits the granularity {space.granularity}",
                               where=source, fix="lower 'granularity' or raise the expansion")
    return space


def _parse(path: Path) -> Any:
    text = read_text(path, "search-space file")
    return parse_json(text, "search-space file", str(path)) if path.suffix == ".json" else \
        parse_yaml(text, "search-space file", str(path))


def load_space(name_or_path: str | Path) -> SearchSpace:
    """A built-in space by name, or a space file by path."""
    text = str(name_or_path)
    if text in BUILTIN_SPACES:
        resource = resources.files("onnxnas.space") / "builtin" / f"{text}.yaml"
        return space_from_dict(parse_yaml(resource.read_text(encoding="utf-8"), "space", text), f"<builtin {text}>")
    path = Path(text)
    if path.suffix not in (".json", ".yaml", ".yml"):
        raise choice_error("search space", text, BUILTIN_SPACES, where="--space")
    return space_from_dict(_parse(path), str(path))
