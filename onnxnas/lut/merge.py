"""`lut merge`: join the shards of one build into one table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from onnxnas.errors import OnnxNasError
from onnxnas.lut.table import LatencyTable


def merge_tables(paths: Sequence[Path]) -> LatencyTable:
    """Shards must come from one build (same identity but the shard) and cover every index once."""
    if not paths:
        raise OnnxNasError("no shard files given", fix="onnxnas lut merge SHARD.json [SHARD.json ...] --out TABLE.json")
    tables = [LatencyTable.load(path) for path in paths]
    first = tables[0]
    identity = {k: v for k, v in first.header.get("identity", {}).items() if k != "shard"}
    seen: dict[int, Path] = {}
    count = int(str(first.header.get("shard", "0/1")).split("/")[1])
    for path, table in zip(paths, tables):
        other = {k: v for k, v in table.header.get("identity", {}).items() if k != "shard"}
        if other != identity:
            fields = sorted(k for k in set(other) | set(identity) if other.get(k) != identity.get(k))
            raise OnnxNasError(f"comes from another build than {paths[0]} (differs in {', '.join(fields)})",
                               where=str(path), fix="merge only shards of one build-lut command")
        index, n = (int(v) for v in str(table.header.get("shard", "0/1")).split("/"))
        if n != count or index in seen:
            raise OnnxNasError(f"shard {index}/{n} clashes with {seen.get(index, paths[0])}", where=str(path),
                               fix="pass each shard i/N of one build exactly once")
        seen[index] = path
    missing = sorted(set(range(count)) - set(seen))
    if missing:
        raise OnnxNasError(f"shards {', '.join(f'{i}/{count}' for i in missing)} are missing",
                           fix="build them with --shard i/N and pass all of them")
    entries = {}
    wanted: list[str] = []
    for table in tables:
        for key, entry in table.entries.items():
            wanted.append(key)
            if not entry.interpolated:
                entries[key] = entry
        wanted += table.header.get("pending_keys", [])
    header = dict(first.header)
    header["shard"] = "all"
    header["identity"] = {**identity, "shard": "0/1"}
    header["merged_from"] = [str(p) for p in paths]
    header.pop("pending_keys", None)
    merged = LatencyTable(header, entries)
    merged.fill_widths(wanted)
    header["pending_keys"] = merged.missing(wanted)
    header["counts"] = merged.summary_counts()
    return merged
