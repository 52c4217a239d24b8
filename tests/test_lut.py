"""LUT keys, table lookups, journal resume (also after SIGKILL), shards, merge, validation."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onnxnas.blocks import BlockSpec
from onnxnas.cli import main
from onnxnas.errors import OnnxNasError
from onnxnas.lut.builder import BuildConfig, Shard, build_lut, units_to_measure
from onnxnas.lut.journal import Journal
from onnxnas.lut.key import block_key, space_units
from onnxnas.lut.merge import merge_tables
from onnxnas.lut.table import LatencyTable, LutEntry
from onnxnas.space import load_space, space_from_dict
from onnxnas.timing.base import TimingProtocol
from onnxnas.timing.onnxruntime import OnnxRuntimeBackend

FAST = TimingProtocol(warmup_runs=2, runs=10, min_time_s=0.0)
SMALL_SPACE = {
    "name": "small", "resolution": 16, "granularity": 8, "stem": {"out_chs": 8},
    "stages": [{"type": "irb", "out_chs": 8, "layers": 2, "kernel_sizes": [3, 5], "max_expansion": 2}],
    "head": {"hidden_chs": 16, "num_classes": 4},
}


def small_config(tmp_path: Path, **overrides) -> BuildConfig:
    fields = dict(space=space_from_dict(SMALL_SPACE, "small"), device={"name": "cpu"}, backend=OnnxRuntimeBackend(1),
                  protocol=FAST, precision="fp32", out=tmp_path / "small.json")
    fields.update(overrides)
    return BuildConfig(**fields)


def test_keys_name_every_timing_field_and_dedupe() -> None:
    spec = BlockSpec("irb", 24, 64, 2, 3, "swish", hidden_chs=96, se=True)
    assert block_key(spec, 72, "fp16") == "irb:1x24x72x72:o64:k3:s2:h96:se1:swish:res0:fp16"
    quantized = BlockSpec("irb", 64, 64, 1, 5, "relu", hidden_chs=128, weight_bits=4, nonzero_fraction=0.5)
    assert block_key(quantized, 8, "int8") == "irb:1x64x8x8:o64:k5:s1:h128:se0:relu:res1:int8:w8"
    dense8 = dataclasses.replace(quantized, weight_bits=8, nonzero_fraction=1.0)
    assert block_key(dense8, 8, "int8") == block_key(quantized, 8, "int8")  # deployed as the same INT8 tensor
    assert block_key(quantized, 8, "fp32") == block_key(dense8, 8, "fp32")
    tiny = load_space("tiny")
    placements = sum(len(p.candidates()) for p in tiny.positions()) + 2  # + stem + head
    units = space_units(tiny, "fp32")
    assert (placements, len(units)) == (132, 100)  # the two 32->32 IRB positions share their keys
    assert len({u.key for u in units}) == len(units)
    assert len(space_units(load_space("gpunet1"), "fp32")) == 1692


def test_missing_keys_error_lists_keys_and_command() -> None:
    header = {"format_version": 1, "precision": "fp32", "device": {"name": "cpu"}, "space": {"name": "tiny"},
              "backend": {"name": "onnxruntime"}}
    table = LatencyTable(header, {"a": LutEntry("a", median_us=5.0), "b": LutEntry("b", error="boom")}, "t.json")
    assert table.latency("a") == 5.0
    with pytest.raises(OnnxNasError) as info:
        table.require(["a", "b", "c"])
    text = str(info.value)
    assert "lacks 2 key(s): b, c" in text and "failed to time: boom" in text
    assert "onnxnas build-lut --device cpu --space tiny --backend onnxruntime --precision fp32 --out t.json" in text


def test_failure_is_recorded_never_zero() -> None:
    with pytest.raises(ValueError, match="neither a positive median_us nor an error"):
        LutEntry.from_dict("k", {"median_us": 0.0})


def test_interpolation_between_measured_widths_only() -> None:
    keys = [f"irb:1x8x8x8:o8:k3:s1:h{h}:se0:relu:res1:fp32" for h in (8, 16, 24, 32)]
    table = LatencyTable({}, {keys[0]: LutEntry(keys[0], median_us=10.0), keys[2]: LutEntry(keys[2], median_us=30.0)})
    assert table.fill_widths(keys) == [keys[1]]  # 32 lies outside the measured range: not extrapolated
    assert table.entries[keys[1]].median_us == pytest.approx(20.0) and table.entries[keys[1]].interpolated
    assert table.missing(keys) == [keys[3]]


def test_build_then_resume_after_truncated_journal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = small_config(tmp_path)
    table = build_lut(config, progress=False)
    expected = {u.key for u in space_units(config.space, "fp32")}
    assert set(table.entries) == expected | {"overhead:1x3x16x16:fp32"}
    assert all(e.ok and e.median_us > 0 and e.p10_us <= e.median_us <= e.p90_us for e in table.entries.values())
    assert table.per_call_overhead_us == table.entries["overhead:1x3x16x16:fp32"].median_us
    assert not config.journal_path.exists()

    # A journal with two good lines and a torn third line: resume keeps the two, re-times the rest.
    config2 = small_config(tmp_path, out=tmp_path / "again.json")
    kept = list(table.entries.values())[:2]
    with Journal(config2.journal_path, config2.identity()) as journal:
        journal.read()
        for entry in kept:
            journal.append(entry)
    with open(config2.journal_path, "a") as handle:
        handle.write('{"key": "irb:torn')
    resumed = build_lut(config2, progress=False)
    assert f"{config2.journal_path}:4: truncated line" in capsys.readouterr().err
    for entry in kept:
        assert resumed.entries[entry.key] == entry  # reused, not timed again
    assert set(resumed.entries) == set(table.entries)


def test_journal_of_another_build_is_refused(tmp_path: Path) -> None:
    config = small_config(tmp_path)
    with Journal(config.journal_path, {**config.identity(), "precision": "fp16"}) as journal:
        journal.read()
    with pytest.raises(OnnxNasError, match="journal belongs to another build .*precision: 'fp16' there, 'fp32' now"):
        build_lut(config, progress=False)


def test_sigkill_loses_nothing_and_repeats_nothing(tmp_path: Path) -> None:
    out = tmp_path / "tiny.json"
    journal = Path(str(out) + ".journal.jsonl")
    cmd = [sys.executable, "-m", "onnxnas", "build-lut", "--device", "cpu", "--space", "tiny", "--out", str(out),
           "--warmup", "2", "--runs", "200", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and (not journal.exists() or len(journal.read_text().splitlines()) < 12):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = [json.loads(line) for line in journal.read_text().splitlines()[1:] if line.endswith("}")]
    assert 10 <= len(before) < 101 and not out.exists()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    table = LatencyTable.load(out)
    assert len(table.entries) == 101 and all(e.ok for e in table.entries.values())
    for record in before:  # journaled before the kill: kept bit for bit, so not timed a second time
        assert table.entries[record["key"]].median_us == record["median_us"]
        assert table.entries[record["key"]].count == record["count"]


def test_shards_partition_keys_and_merge(tmp_path: Path) -> None:
    paths = []
    for index in range(3):
        config = small_config(tmp_path, shard=Shard(index, 3), out=tmp_path / f"s{index}.json")
        build_lut(config, progress=False)
        paths.append(config.out)
    shards = [set(LatencyTable.load(p).entries) - {"overhead:1x3x16x16:fp32"} for p in paths]
    assert not (shards[0] & shards[1]) and not (shards[1] & shards[2])
    merged = merge_tables(paths)
    assert set(merged.entries) == {u.key for u in space_units(space_from_dict(SMALL_SPACE, "s"), "fp32")} | {
        "overhead:1x3x16x16:fp32"}
    with pytest.raises(OnnxNasError, match="shards 2/3 are missing"):
        merge_tables(paths[:2])
    with pytest.raises(OnnxNasError, match="clashes"):
        merge_tables([paths[0], paths[0], paths[1]])


def test_interpolate_every_times_fewer_keys(tmp_path: Path) -> None:
    units = space_units(load_space("tiny"), "fp32")
    chosen = units_to_measure(units, 2)
    # per width group of 4, 6, 6, 8 widths: every other one plus the widest (3, 4, 4, 5), x4 (kernel, se); + 4 fixed
    assert len(chosen) == 4 + 4 * (3 + 4 + 4 + 5)
    wider = json.loads(json.dumps(SMALL_SPACE))
    wider["stages"][0]["max_expansion"] = 4  # widths 8, 16, 24, 32: time 8, 24, 32 and interpolate 16
    table = build_lut(small_config(tmp_path, space=space_from_dict(wider, "wider"), interpolate_every=2), progress=False)
    interpolated = [e for e in table.entries.values() if e.interpolated]
    assert {e.key.split(":")[5] for e in interpolated} == {"h16"} and len(interpolated) == 2  # k3, k5 (both positions share keys)
    assert table.summary_counts()["failed"] == 0 and not table.header["pending_keys"]


def test_int8_tables_time_every_key_as_deployed(tmp_path: Path) -> None:
    out = tmp_path / "int8.json"
    space_file = tmp_path / "small.json"
    space_file.write_text(json.dumps(SMALL_SPACE))
    code = main(["build-lut", "--device", "cpu", "--space", str(space_file), "--precision", "int8", "--out", str(out),
                 "--warmup", "1", "--runs", "3", "--no-progress"])
    assert code == 0
    table = LatencyTable.load(out)
    blocks = [key for key in table.entries if not key.startswith("overhead:")]
    assert blocks and all(key.endswith(":int8:w8") for key in blocks)
    assert all(entry.ok and entry.median_us > 0 for entry in table.entries.values())


class FailingBackend(OnnxRuntimeBackend):
    """ORT, except that blocks with a 5x5 kernel fail to time."""

    def measure(self, job, protocol):  # type: ignore[no-untyped-def]
        if ":k5:" in job.key:
            raise RuntimeError("no kernel for this block")
        return super().measure(job, protocol)


def test_a_block_that_fails_to_time_is_stored_as_a_failure_never_as_zero(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = small_config(tmp_path, backend=FailingBackend(1))
    table = build_lut(config, progress=False)
    failed = [e for e in table.entries.values() if not e.ok]
    assert failed and all(":k5:" in e.key and e.median_us is None and "no kernel" in e.error for e in failed)
    assert main(["lut", "show", str(config.out)]) == 0
    assert "FAILED" in capsys.readouterr().out


def test_validate_stores_report_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tiny.json"
    assert main(["build-lut", "--device", "cpu", "--out", str(out), "--warmup", "2", "--runs", "20", "--no-progress"]) == 0
    assert main(["lut", "validate", str(out), "--samples", "6", "--rounds", "1", "--plot", str(tmp_path / "v.png"),
                 "--no-progress"]) == 0
    table = LatencyTable.load(out)
    report = table.header["validation"]
    assert report["samples"] == 3 and len(report["points"]) == 6  # half calibrates, half is held out
    assert [p["held_out"] for p in report["points"]] == [False, True] * 3
    assert all(p["measured_us"] > 0 and p["predicted_us"] > 0 for p in report["points"])
    # the fitted overhead is the least-squares solution on the calibration half, and predictions use it
    fit = [p for p in report["points"] if not p["held_out"]]
    c = sum((p["unit_sum_us"] - p["measured_us"]) * (p["units"] - 1) for p in fit) / sum((p["units"] - 1) ** 2 for p in fit)
    assert table.per_call_overhead_us == pytest.approx(c, rel=1e-4)  # points are stored rounded to 1 ns
    assert report["fitted_overhead_us"] == pytest.approx(c, abs=1e-3)
    for p in report["points"]:
        assert p["predicted_us"] == pytest.approx(p["unit_sum_us"] - c * (p["units"] - 1), abs=2e-3)
    assert (tmp_path / "v.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, message", [
    (["build-lut", "--device", "tpu"], "unknown device 'tpu' -- fix: use one of: a10, a100"),
    (["build-lut", "--device", "cpu", "--shard", "3/2"], "--shard '3/2': need 0 <= i < N"),
    (["build-lut", "--device", "cpu", "--runs", "0"], "argument --min-runs/--runs: expected an integer in [1, 1000000], got 0"),
    (["build-lut", "--device", "cpu", "--backend", "tvm"], "unknown backend 'tvm'"),
    (["lut", "show", "/nonexistent/t.json"], "/nonexistent/t.json: latency table not found"),
])
def test_cli_errors_are_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_corrupt_table_names_file_and_unwritable_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "t.json"
    bad.write_text('{"header": {"format_version": 1},\n "entries": {"k": {"median_us": ')
    assert main(["lut", "show", str(bad)]) == 2
    assert f"{bad}: malformed latency table at line 2" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["build-lut", "--device", "cpu", "--out", str(blocker / "t.json"), "--no-progress"]) == 2
    assert "cannot write" in capsys.readouterr().err
