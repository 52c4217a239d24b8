"""metrics.jsonl: one JSON object per finished epoch, written by search and train, read by plot.

The reader is bounded (a regular file of at most :data:`MAX_METRICS_BYTES`) and checks each
line's fields where it reads them, so a torn, hand-edited or foreign file is one error that
names the file, the line and the field, never a traceback from inside the plotting code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from onnxnas.errors import OnnxNasError
from onnxnas.fileio import atomic_write_text, parse_json, read_text
from onnxnas.schema import MAX_LAYERS, Fields

MAX_METRICS_BYTES = 64 << 20  # a 100,000-epoch search writes a few MB


def write_metrics(path: Path, lines: list[dict[str, Any]]) -> Path:
    """All lines at once, atomically; a NaN here is a bug, refused rather than written as invalid JSON."""
    return atomic_write_text(path, "".join(json.dumps(line, allow_nan=False) + "\n" for line in lines))


def read_search_metrics(path: Path) -> list[dict[str, Any]]:
    """A search's metrics lines, each checked for the fields the curves use."""
    text = read_text(path, "metrics file", MAX_METRICS_BYTES)
    lines = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if raw.strip():
            where = f"{path}:{number}"
            lines.append(_search_line(parse_json(raw, "metrics line", where), where))
    if not lines:
        raise OnnxNasError("metrics file has no epochs", where=str(path),
                           fix="run (or resume) the search until an epoch finishes")
    layers = len(lines[0]["alive"])
    for number, line in enumerate(lines[1:], start=2):
        if len(line["alive"]) != layers:
            raise OnnxNasError(f"epoch line {number} lists {len(line['alive'])} layers in 'alive', line 1 lists {layers}",
                               where=str(path), fix="pass the metrics.jsonl of one search")
    return lines


def _search_line(data: Any, where: str) -> dict[str, Any]:
    f = Fields(data, "$", where)
    line = {"epoch": f.integer("epoch", high=2**31), "train_ce": f.number("train_ce"), "lat_us": f.number("lat_us")}
    for name in ("arch_loss", "sampled_lat_us", "threshold"):
        line[name] = None if f.get(name, None) is None else f.number(name)
    alive = f.list("alive", max_items=MAX_LAYERS, min_items=1)
    if not all(isinstance(slots, list) and len(slots) <= MAX_LAYERS for slots in alive):
        raise f.fail("alive", "expected one list of live block slots per layer",
                     fix="pass a metrics.jsonl written by 'onnxnas search'")
    line["alive"] = alive
    return {**data, **line}
