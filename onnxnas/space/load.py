"""Load and validate a search space from a built-in name or a JSON/YAML file.

Every error names the file and the field (``stages[2].kernel_sizes``) and says what is
expected, so a user can fix the file without reading this code.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from onnxnas.blocks.spec import ACTIVATIONS, BLOCK_TYPES, IRB_TYPES, HeadSpec
from onnxnas.errors import OnnxNasError, choice_error
from onnxnas.space.spec import SearchSpace, StageSpec, StemSpec

BUILTIN_SPACES = ("gpunet1", "mbv2", "tiny")
STAGE_TYPES = tuple(t for t in BLOCK_TYPES if t != "skip")


class _Fields:
    """Reads typed fields from one mapping of the file, with path-aware errors."""

    def __init__(self, data: Any, path: str, source: str):
        if not isinstance(data, dict):
            raise OnnxNasError(f"{path or 'document'}: expected a mapping, got {type(data).__name__}", where=source)
        self.data, self.path, self.source = data, path, source
        self.used: set[str] = set()

    def _fail(self, name: str, expected: str, value: Any) -> OnnxNasError:
        return OnnxNasError(f"{self.path}{'.' if self.path else ''}{name}: expected {expected}, got {value!r}",
                            where=self.source, fix=f"correct field '{name}'")

    def get(self, name: str, default: Any = ..., ) -> Any:
        self.used.add(name)
        if name not in self.data:
            if default is ...:
                raise OnnxNasError(f"{self.path}{'.' if self.path else ''}{name}: required field is missing",
                                   where=self.source, fix=f"add '{name}'")
            return default
        return self.data[name]

    def int(self, name: str, default: Any = ..., minimum: int = 1) -> int:
        value = self.get(name, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise self._fail(name, f"an integer >= {minimum}", value)
        return value

    def number(self, name: str, default: Any = ..., low: float = 0.0, high: float = float("inf")) -> float | None:
        value = self.get(name, default)
        if value is None:
            return None
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not low < value <= high:
            raise self._fail(name, f"a number in ({low}, {high}]", value)
        return float(value)

    def choice(self, name: str, choices: tuple[str, ...], default: Any = ...) -> str:
        value = self.get(name, default)
        if value not in choices:
            raise self._fail(name, f"one of {', '.join(choices)}", value)
        return value

    def items(self, name: str, check: Any, expected: str, default: Any = ...) -> tuple[Any, ...]:
        value = self.get(name, default)
        if isinstance(value, (int, float, bool)) and not isinstance(default, tuple):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value or not all(check(v) for v in value):
            raise self._fail(name, f"a non-empty list of {expected}", value)
        return tuple(value)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise OnnxNasError(f"{self.path}{'.' if self.path else ''}{unknown[0]}: unknown field",
                               where=self.source, fix=f"remove it or use one of: {', '.join(sorted(self.used))}")


def _is_kernel(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0 and v % 2 == 1


def _is_fraction(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1


def _stage(data: Any, path: str, source: str) -> StageSpec:
    f = _Fields(data, path, source)
    stage = StageSpec(
        type=f.choice("type", STAGE_TYPES),
        out_chs=f.int("out_chs"),
        layers=f.int("layers"),
        stride=f.int("stride", 1),
        kernel_sizes=f.items("kernel_sizes", _is_kernel, "odd positive integers", (3,)),
        act=f.choice("act", ACTIVATIONS, "relu"),
        se=f.items("se", lambda v: isinstance(v, bool) or v in (0, 1), "booleans", (False,)),
        max_expansion=f.number("max_expansion", None, high=64),
        expansion=f.number("expansion", None, high=64),
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
            raise f._fail("skippable", f"a list of layer indices in [0, {stage.layers})", stage.skippable)
        stage = StageSpec(**{**stage.__dict__, "skippable": tuple(stage.skippable)})
    if stage.type in ("fused_irb", "irb") and (stage.max_expansion is None) == (stage.expansion is None):
        raise OnnxNasError(f"{path}: an {stage.type} stage needs exactly one of max_expansion or expansion",
                           where=source, fix="set max_expansion (PruNet widths) or expansion (+ width_fractions)")
    return stage


def space_from_dict(data: Any, source: str) -> SearchSpace:
    """Validate a parsed space document; ``source`` names the file in errors."""
    top = _Fields(data, "", source)
    stem = _Fields(top.get("stem"), "stem", source)
    head = _Fields(top.get("head"), "head", source)
    stages = top.get("stages")
    if not isinstance(stages, list) or not stages:
        raise top._fail("stages", "a non-empty list of stages", stages)
    space = SearchSpace(
        name=str(top.get("name")),
        resolution=top.int("resolution"),
        in_chs=top.int("in_chs", 3),
        granularity=top.int("granularity", 8),
        stem=StemSpec(out_chs=stem.int("out_chs"), kernel_size=stem.int("kernel_size", 3),
                      stride=stem.int("stride", 2), act=stem.choice("act", ACTIVATIONS, "relu")),
        stages=tuple(_stage(s, f"stages[{i}]", source) for i, s in enumerate(stages)),
        head=HeadSpec(in_chs=0, hidden_chs=head.int("hidden_chs"), num_classes=head.int("num_classes", 1000),
                      act=head.choice("act", ACTIVATIONS, "relu")),
    )
    for fields in (stem, head, top):
        fields.done()
    head_spec = HeadSpec(space.last_chs, space.head.hidden_chs, space.head.num_classes, space.head.act)
    space = SearchSpace(**{**space.__dict__, "head": head_spec})
    for position in space.positions():
        if position.type in IRB_TYPES and not position.hidden_choices:
            raise OnnxNasError(f"stages[{position.stage}]: no hidden width fits the granularity {space.granularity}",
                               where=source, fix="lower 'granularity' or raise the expansion")
    return space


def _parse(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise OnnxNasError("search-space file not found", where=str(path),
                           fix=f"pass a JSON/YAML file or one of: {', '.join(BUILTIN_SPACES)}") from exc
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise OnnxNasError(f"malformed search-space file: {str(exc).splitlines()[0]}", where=str(path)) from exc


def load_space(name_or_path: str | Path) -> SearchSpace:
    """A built-in space by name, or a space file by path."""
    text = str(name_or_path)
    if text in BUILTIN_SPACES:
        resource = resources.files("onnxnas.space") / "builtin" / f"{text}.yaml"
        return space_from_dict(yaml.safe_load(resource.read_text(encoding="utf-8")), f"<builtin {text}>")
    path = Path(text)
    if path.suffix not in (".json", ".yaml", ".yml"):
        raise choice_error("search space", text, BUILTIN_SPACES, where="--space")
    return space_from_dict(_parse(path), str(path))
