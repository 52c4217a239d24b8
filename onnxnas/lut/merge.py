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
    for path, table in zip(paths, tables):
        if table.header.get("shard") == "all":
            raise OnnxNasError("is a merged table, not a shard", where=str(path),
                               fix="merge the shard files it came from (see its header's merged_from)")
    first = tables[0]
    identity = {k: v for k, v in first.header.get("identity", {}).items() if k != "shard"}
    seen: dict[int, Path] = {}
    count = _shard(first)[1]
    for path, table in zip(paths, tables):
        other = {k: v for k, v in table.header.get("identity", {}).items() if k != "shard"}
        if other != identity:
            fields = sorted(k for k in set(other) | set(identity) if other.get(k) != identity.get(k))
            raise OnnxNasError(f"comes from another build than {paths[0]} (differs in {', '.join(fields)})",
                               where=str(path), fix="merge only shards of one build-lut command")
        index, n = _shard(table)
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


def _shard(table: LatencyTable) -> tuple[int, int]:
    """(i, N) of a shard's header (validated as 'i/N' by the loader)."""
    index, count = str(table.header.get("shard", "0/1")).split("/")
    return int(index), int(count)


def check_merge_out(out: Path, shards: Sequence[Path]) -> None:
    """``--out`` must not be one of the inputs: the merge would replace a shard it read."""
    for shard in shards:
        if out.resolve() == shard.resolve() or (out.exists() and shard.exists() and out.samefile(shard)):
            raise OnnxNasError("--out is one of the shards being merged", where=str(out),
                               fix="write the merged table to a new file")
    if out.is_dir():
        raise OnnxNasError("--out is a directory", where=str(out), fix="pass a file path ending in .json")
