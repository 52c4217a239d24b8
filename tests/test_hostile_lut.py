"""Hostile inputs and faults for the latency-table side: table files, build journals (with real
SIGKILLs), write errors, locks, merge, flags, and tables measured elsewhere.

Every case asserts the exit code, that no traceback is printed, that the one error line names
the file or flag, and, where it applies, that nothing was lost or written elsewhere. New APIs
are imported inside the tests that need them, so this corpus also runs against older trees.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from onnxnas.cli import main
from onnxnas.lut.table import LatencyTable
from onnxnas.timing.onnxruntime import OnnxRuntimeBackend

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "latency_tables" / "tiny-cpu-onnxruntime-fp32.json"
EXAMPLE_ARCH = REPO / "examples" / "tiny.arch.json"
KEY = "conv:1x16x16x16:o16:k3:s1:h0:se0:relu:res0:fp32"  # an entry of the shipped table
# One stage, two widths, two kernels: 6 keys + the overhead probe, built in about a second.
SPACE = {"name": "hostile", "resolution": 16, "granularity": 8, "stem": {"out_chs": 8},
         "stages": [{"type": "irb", "out_chs": 8, "layers": 1, "kernel_sizes": [3, 5], "max_expansion": 2}],
         "head": {"hidden_chs": 16, "num_classes": 4}}
FAST = ["--warmup", "1", "--runs", "3", "--no-progress"]
ENTRIES = 7


def one_line_error(code: int, err: str, *names: str) -> str:
    """Exit 2, no traceback, exactly one error line, naming every one of ``names``."""
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("onnxnas: error:")]
    assert len(errors) == 1, err
    for name in names:
        assert name in errors[0], (name, errors[0])
    return errors[0]


@pytest.fixture(scope="module")
def space_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("space") / "hostile.json"
    path.write_text(json.dumps(SPACE))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, space_file: Path) -> Path:
    """A small table built here (module scope; tests copy it before changing it)."""
    out = tmp_path_factory.mktemp("built") / "t.json"
    assert main(["build-lut", "--device", "cpu", "--space", str(space_file), "--out", str(out), *FAST]) == 0
    return out


def shipped_doc() -> dict[str, Any]:
    return json.loads(SHIPPED.read_text())


# ---- 1, 3, 7: every field of a table is checked where it is read ----------------------------------

def _set(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    target = doc
    for part in path[:-1]:
        target = target[part]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


_DELETE = object()
BAD_TABLES = [  # (id, (path, value), text the error must contain)
    ("header-is-string", (("header",), "x"), "$.header: expected an object, got a string"),
    ("entries-is-list", (("entries",), []), "$.entries: expected an object"),
    ("entry-is-number", (("entries", KEY), 3), f'$.entries["{KEY}"]: expected an object'),
    ("median-bool", (("entries", KEY, "median_us"), True), f'$.entries["{KEY}"].median_us: expected a finite number'),
    ("median-negative", (("entries", KEY, "median_us"), -3.0), f'$.entries["{KEY}"].median_us: expected a number in (0'),
    ("median-zero", (("entries", KEY, "median_us"), 0), f'$.entries["{KEY}"].median_us'),
    ("median-string", (("entries", KEY, "median_us"), "12"), "median_us: expected a finite number, got '12'"),
    ("median-huge", (("entries", KEY, "median_us"), 1e300), "median_us: expected a number in"),
    ("p10-above-median", (("entries", KEY, "p10_us"), 99.0), "p10_us: 99 exceeds median_us"),
    ("p90-below-median", (("entries", KEY, "p90_us"), 1.0), "p90_us: 1 is below median_us"),
    ("count-negative", (("entries", KEY, "count"), -1), "count: expected an integer in [0"),
    ("count-float", (("entries", KEY, "count"), 1.5), "count: expected an integer, got 1.5"),
    ("entry-typo-field", (("entries", KEY, "medain_us"), 3.0), "medain_us: unknown field"),
    ("entry-error-and-median", (("entries", KEY, "error"), "boom"), "a median_us or an error, not both"),
    ("entry-empty", (("entries", KEY), {}), f'$.entries["{KEY}"].error: required field is missing'),
    ("key-too-long", (("entries", "k" * 600), {"median_us": 1.0}), "a key must be a non-empty string"),
    ("runs-1e9", (("header", "protocol", "runs"), 10**9), "$.header.protocol.runs: expected an integer in [1, 1000000]"),
    ("threads-string", (("header", "protocol", "threads"), "2"), "$.header.protocol.threads: expected an integer"),
    ("protocol-typo", (("header", "protocol", "run"), 5), "$.header.protocol.run: unknown field"),
    ("min-time-inf-like", (("header", "protocol", "min_time_s"), 1e9), "$.header.protocol.min_time_s"),
    ("format-version-2", (("header", "format_version"), 2), "unsupported version 2"),
    ("format-version-bool", (("header", "format_version"), True), "unsupported version True"),
    ("space-name-path", (("header", "space", "name"), "../../etc"), "$.header.space.name: expected a plain name"),
    ("resolution-huge", (("header", "space", "resolution"), 10**6), "$.header.space.resolution"),
    ("overhead-negative", (("header", "calibration", "per_call_overhead_us"), -1), "per_call_overhead_us"),
    ("shard-nonsense", (("header", "shard"), "5/2"), "$.header.shard: expected 'i/N'"),
    ("tau-out-of-range", (("header", "validation", "kendall_tau"), 2.0), "$.header.validation.kendall_tau"),
    ("mape-string", (("header", "validation", "mape_pct"), "low"), "$.header.validation.mape_pct"),
    ("device-missing", (("header", "device"), _DELETE), "$.header.device: required field is missing"),
    ("backend-name-number", (("header", "backend", "name"), 123), "$.header.backend.name"),
    ("precision-fp64", (("header", "precision"), "fp64"), "$.header.precision: expected one of fp32, fp16, int8"),
    ("pending-keys-object", (("header", "pending_keys"), {"a": 1}), "$.header.pending_keys"),
]


@pytest.mark.parametrize("change, message", [case[1:] for case in BAD_TABLES], ids=[case[0] for case in BAD_TABLES])
def test_bad_table_field_is_one_line_naming_file_and_path(change: tuple[tuple[Any, ...], Any], message: str,
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_set(shipped_doc(), *change)))
    error = one_line_error(main(["lut", "show", str(path)]), capsys.readouterr().err, str(path), message)
    assert "fix:" in error


BAD_BYTES = [
    ("nan", lambda text: text.replace('"median_us": 22.943', '"median_us": NaN'), "NaN is not a finite number"),
    ("infinity", lambda text: text.replace('"median_us": 22.943', '"median_us": Infinity'), "Infinity is not a finite"),
    ("1e400", lambda text: text.replace('"median_us": 22.943', '"median_us": 1e400'), "1e400 is not a finite number"),
    ("huge-int", lambda text: text.replace('"count": 1992', '"count": ' + "9" * 5000), "malformed latency table"),
    ("deep-nesting", lambda text: text.replace('"count": 1992', '"count": ' + "[" * 100000), "malformed latency table"),
    ("empty", lambda text: "", "malformed latency table at line 1"),
    ("top-level-list", lambda text: "[" + text + "]", "$: expected an object, got a list"),
]


@pytest.mark.parametrize("damage, message", [case[1:] for case in BAD_BYTES], ids=[case[0] for case in BAD_BYTES])
def test_bad_table_bytes_are_one_line(damage: Any, message: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.json"
    path.write_text(damage(SHIPPED.read_text()))
    one_line_error(main(["lut", "show", str(path)]), capsys.readouterr().err, str(path), message)


def test_not_utf8_and_not_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(b'{"header": "\xff\xfe"}')
    one_line_error(main(["lut", "show", str(path)]), capsys.readouterr().err, str(path), "not UTF-8")
    one_line_error(main(["lut", "show", str(tmp_path)]), capsys.readouterr().err, str(tmp_path), "not a regular file")
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    one_line_error(main(["lut", "show", str(fifo)]), capsys.readouterr().err, str(fifo), "not a regular file")


# The same bad table through every command that reads one: each goes through the one loader.
def _bad_table(tmp_path: Path) -> Path:
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(_set(shipped_doc(), ("entries", KEY, "median_us"), True)))
    return path


@pytest.mark.parametrize("command", [
    ["lut", "validate", "{table}", "--samples", "4", "--no-progress"],
    ["lut", "check", "{table}", "--no-progress"],
    ["lut", "merge", "{table}", "--out", "{tmp}/merged.json"],
    ["arch", "stats", str(EXAMPLE_ARCH), "--lut", "{table}"],
    ["search", "--space", "tiny", "--lut", "{table}", "--data", "synthetic", "--out", "{tmp}/search"],
    ["build-lut", "--device", "cpu", "--out", "{table}", *FAST],
], ids=["validate", "check", "merge", "arch-stats", "search", "build-lut-existing-out"])
def test_every_command_reads_tables_through_the_loader(command: list[str], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    table = _bad_table(tmp_path)
    before = table.read_bytes()
    argv = [part.format(table=table, tmp=tmp_path) for part in command]
    one_line_error(main(argv), capsys.readouterr().err, str(table), f'$.entries["{KEY}"].median_us')
    assert table.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["nan.json"]


# ---- 4: the build journal never loses good work (real SIGKILLs) -----------------------------------

def _build_cmd(space_file: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "onnxnas", "build-lut", "--device", "cpu", "--space", str(space_file),
            "--out", str(out), "--warmup", "5", "--runs", "3000", "--no-progress"]


def _kill_after(cmd: list[str], journal: Path, lines: int) -> None:
    """Start ``cmd`` and SIGKILL it once ``journal`` holds ``lines`` complete lines."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if journal.exists() and journal.read_bytes().count(b"\n") >= lines:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert journal.read_bytes().count(b"\n") >= lines, "the build finished before it could be killed"


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory, space_file: Path) -> bytes:
    """The journal of a build SIGKILLed after its identity line and at least 4 keys."""
    out = tmp_path_factory.mktemp("killed") / "t.json"
    journal = Path(f"{out}.journal.jsonl")
    _kill_after(_build_cmd(space_file, out), journal, 5)
    assert not out.exists()
    return journal.read_bytes()


def _journaled(data: bytes) -> dict[str, dict[str, Any]]:
    records = [json.loads(line) for line in data.splitlines()[1:] if line.endswith(b"}")]
    return {r["key"]: r for r in records if isinstance(r, dict) and isinstance(r.get("key"), str)}


def _resume(space_file: Path, out: Path, journal_bytes: bytes, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    Path(f"{out}.journal.jsonl").write_bytes(journal_bytes)
    code = main(["build-lut", "--device", "cpu", "--space", str(space_file), "--out", str(out),
                 "--warmup", "5", "--runs", "3000", "--no-progress"])
    return code, capsys.readouterr().err


def _assert_kept(out: Path, records: dict[str, dict[str, Any]]) -> None:
    table = LatencyTable.load(out)
    assert len(table.entries) == ENTRIES and all(e.ok for e in table.entries.values())
    for key, record in records.items():  # kept bit for bit: not timed a second time
        assert (table.entries[key].median_us, table.entries[key].count) == (record["median_us"], record["count"])


JOURNAL_DAMAGE = [  # (id, damage to the killed journal's lines, keys it leaves to keep, warning text)
    ("as-killed", lambda lines: lines, None, None),
    ("corrupt-middle-line", lambda lines: lines[:2] + [b'{"key": "irb:\x00 garbage\n'] + lines[3:], 2,
     ":3: malformed journal line"),
    ("key-not-a-string", lambda lines: lines[:2] + [b'{"key": 5, "median_us": 3.0, "count": 1}\n'] + lines[2:], None,
     ":3: $: a key must be a non-empty string"),
    ("nan-median-line", lambda lines: lines + [b'{"key": "x", "median_us": NaN, "count": 1}\n'], None,
     "NaN is not a finite number"),
    ("bool-median-line", lambda lines: lines + [b'{"key": "x", "median_us": true, "count": 1}\n'], None,
     "$.median_us: expected a finite number"),
    ("torn-identity-line", lambda lines: [b'{"journal": 1, "ide\n'] + lines[1:], None, ":1: identity line missing"),
    ("empty-identity-line", lambda lines: [b"\n"] + lines[1:], None, ":1: identity line missing"),
    ("identity-line-gone", lambda lines: lines[1:], None, ":1: identity line missing"),
    ("torn-last-line", lambda lines: lines + [b'{"key": "irb:to'], None, "truncated line"),
]


@pytest.mark.slow
@pytest.mark.parametrize("damage, drop, warning", [c[1:] for c in JOURNAL_DAMAGE], ids=[c[0] for c in JOURNAL_DAMAGE])
def test_damaged_journal_resumes_keeping_every_good_line(damage: Any, drop: int | None, warning: str | None,
                                                         killed: bytes, space_file: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    lines = killed.splitlines(keepends=True)
    lines = [line for line in lines if line.endswith(b"\n")]  # the kill's own torn line is its own case
    damaged = b"".join(damage(lines))
    keep = _journaled(b"".join(line for index, line in enumerate(lines) if index != drop))
    out = tmp_path / "t.json"
    code, err = _resume(space_file, out, damaged, capsys)
    assert code == 0 and "Traceback" not in err, err
    if warning:
        assert f"{out}.journal.jsonl" in err and warning in err, err
    _assert_kept(out, keep)
    assert not Path(f"{out}.journal.jsonl").exists()


@pytest.mark.slow
def test_lost_identity_line_is_rewritten_so_the_next_kill_is_resumable(killed: bytes, space_file: Path,
                                                                      tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.json"
    journal = Path(f"{out}.journal.jsonl")
    lines = [line for line in killed.splitlines(keepends=True) if line.endswith(b"\n")]
    journal.write_bytes(b"".join(lines[1:]))  # no identity line
    _kill_after(_build_cmd(space_file, out), journal, len(lines) + 1)  # killed again, after one more key
    assert json.loads(journal.read_bytes().splitlines()[0])["journal"] == 1  # rewritten before any new line
    second = journal.read_bytes()
    code, err = _resume(space_file, out, second, capsys)
    assert code == 0 and "Traceback" not in err, err
    _assert_kept(out, _journaled(second))


@pytest.mark.parametrize("journal_bytes, message", [
    (b'{"journal": 1, "identity": {"precision": "fp16"}}\n', "journal belongs to another build"),
    (b'{"journal": 7, "identity": {}}\n', "unsupported build journal version 7"),
    (b'{"key": "irb:not-of-this-build", "median_us": 1.0, "count": 1}\n', "holds 1 key(s) this build does not time"),
], ids=["other-build", "other-version", "no-identity-foreign-keys"])
def test_foreign_journal_is_refused_and_kept(journal_bytes: bytes, message: str, space_file: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.json"
    journal = Path(f"{out}.journal.jsonl")
    journal.write_bytes(journal_bytes)
    code = main(["build-lut", "--device", "cpu", "--space", str(space_file), "--out", str(out), *FAST])
    one_line_error(code, capsys.readouterr().err, str(journal), message)
    assert journal.read_bytes() == journal_bytes and not out.exists()


def test_journal_that_is_a_directory(space_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.json"
    Path(f"{out}.journal.jsonl").mkdir()
    code = main(["build-lut", "--device", "cpu", "--space", str(space_file), "--out", str(out), *FAST])
    one_line_error(code, capsys.readouterr().err, f"{out}.journal.jsonl", "not a regular file")


# ---- 5: environment errors stop the build, are never a key's failure ------------------------------

def _failing_measure(exc: BaseException, after: int) -> Any:
    real = OnnxRuntimeBackend.measure
    calls = {"n": 0}

    def measure(self: OnnxRuntimeBackend, job: Any, protocol: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > after:
            raise exc
        return real(self, job, protocol)

    return measure


@pytest.mark.parametrize("exc, message", [
    (OSError(errno.ENOSPC, "No space left on device"), "OSError: No space left on device"),
    (MemoryError(), "MemoryError"),
], ids=["enospc", "memory"])
def test_environment_error_while_timing_aborts_and_is_retried(exc: BaseException, message: str, space_file: Path,
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.json"
    argv = ["build-lut", "--device", "cpu", "--space", str(space_file), "--out", str(out), *FAST]
    monkeypatch.setattr(OnnxRuntimeBackend, "measure", _failing_measure(exc, after=2))
    one_line_error(main(argv), capsys.readouterr().err, "stopped while timing", message, "rerun the same command")
    journal = Path(f"{out}.journal.jsonl").read_bytes()
    assert len(_journaled(journal)) == 3 and b"error" not in journal  # overhead + 2 blocks; the third not recorded
    monkeypatch.undo()
    assert main(argv) == 0
    table = LatencyTable.load(out)
    assert table.summary_counts() == {"entries": ENTRIES, "measured": ENTRIES, "interpolated": 0, "failed": 0}
    for key, record in _journaled(journal).items():
        assert table.entries[key].median_us == record["median_us"]


def test_block_failure_is_recorded_with_its_text(space_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.json"
    monkeypatch.setattr(OnnxRuntimeBackend, "measure", _failing_measure(RuntimeError("bad kernel"), after=0))
    assert main(["build-lut", "--device", "cpu", "--space", str(space_file), "--out", str(out), *FAST]) == 1
    table = LatencyTable.load(out)
    assert {e.error for e in table.entries.values() if not e.ok} == {"RuntimeError: bad kernel"}
    assert table.summary_counts()["failed"] == ENTRIES - 1  # every block; the overhead probe is an ONNX file


def test_full_disk_on_journal_write(space_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.json"

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    import onnxnas.lut.journal as journal_module

    monkeypatch.setattr(journal_module.os, "fsync", full)
    code = main(["build-lut", "--device", "cpu", "--space", str(space_file), "--out", str(out), *FAST])
    one_line_error(code, capsys.readouterr().err, "No space left on device")
    assert not out.exists()


def test_full_disk_when_writing_the_table_keeps_the_journal(space_file: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.json"
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        if str(dst) == str(out):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    argv = ["build-lut", "--device", "cpu", "--space", str(space_file), "--out", str(out), *FAST]
    one_line_error(main(argv), capsys.readouterr().err, str(out), "No space left on device")
    journal = Path(f"{out}.journal.jsonl").read_bytes()
    assert len(_journaled(journal)) == ENTRIES and not out.exists()
    monkeypatch.undo()
    assert main(argv) == 0  # nothing timed again: every key comes from the journal
    table = LatencyTable.load(out)
    assert {k: e.median_us for k, e in table.entries.items()} == {k: r["median_us"] for k, r in _journaled(journal).items()}


@pytest.mark.parametrize("argv, names", [
    (["build-lut", "--device", "cpu", "--space", "{space}", "--out", "{tmp}", *FAST], ["--out is a directory"]),
    (["lut", "validate", "{built}", "--samples", "4", "--plot", "{tmp}", "--no-progress"], ["--plot is a directory"]),
    (["lut", "merge", "{built}", "--out", "{tmp}"], ["--out is a directory"]),
], ids=["build-lut-out-dir", "validate-plot-dir", "merge-out-dir"])
def test_output_that_is_a_directory(argv: list[str], names: list[str], built: Path, space_file: Path,
                                    tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = built.read_bytes()
    code = main([a.format(space=space_file, tmp=tmp_path, built=built) for a in argv])
    one_line_error(code, capsys.readouterr().err, str(tmp_path), *names)
    assert built.read_bytes() == before and list(tmp_path.iterdir()) == []


# ---- 6: paths come from --out and plain names only ------------------------------------------------

def test_backend_name_never_becomes_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(["build-lut", "--device", "cpu", "--backend", "../../evil", *FAST])
    one_line_error(code, capsys.readouterr().err, "--backend", "'../../evil'")
    assert list(tmp_path.iterdir()) == [] and not (tmp_path.parent.parent / "evil").exists()


def test_build_writes_only_beside_out(space_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "deep" / "t.json"
    assert main(["build-lut", "--device", "cpu", "--space", str(space_file), "--out", str(out), *FAST]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep"]
    assert sorted(p.name for p in out.parent.iterdir()) == [".onnx-cache", ".t.json.lock", "t.json"]
    assert [p.name for p in (out.parent / ".onnx-cache").iterdir()] == [f"hostile-{LatencyTable.load(out).header['space']['hash']}-fp32"]


# ---- flags: sizes bounded before anything runs ----------------------------------------------------

@pytest.mark.parametrize("argv, flag", [
    (["build-lut", "--device", "cpu", "--interpolate-every", "1000000000", *FAST], "--interpolate-every"),
    (["build-lut", "--device", "cpu", "--num-classes", "1000000000", *FAST], "--num-classes"),
    (["build-lut", "--device", "cpu", "--shard", "0/1000000000000", *FAST], "--shard"),
    (["lut", "validate", str(SHIPPED), "--samples", "1000000000"], "--samples"),
    (["lut", "validate", str(SHIPPED), "--rounds", "1000000000"], "--rounds"),
    (["lut", "show", str(SHIPPED), "--top", "-5"], "--top"),
    (["lut", "check", str(SHIPPED), "--samples", "0"], "--samples"),
    (["lut", "check", str(SHIPPED), "--tolerance", "nan"], "--tolerance"),
], ids=["interpolate-every", "num-classes", "shard", "validate-samples", "validate-rounds", "show-top",
        "check-samples", "check-tolerance-nan"])
def test_flags_out_of_range(argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    before = SHIPPED.read_bytes()
    one_line_error(main(argv), capsys.readouterr().err, flag)
    assert SHIPPED.read_bytes() == before


# ---- also: locks, merge, hints, pipes ---------------------------------------------------------------

def test_second_build_on_the_same_out_fails_at_once(space_file: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from onnxnas.lock import exclusive_output

    out = tmp_path / "t.json"
    with exclusive_output(tmp_path / ".t.json.lock", "latency table"):  # what a running build holds
        code = main(["build-lut", "--device", "cpu", "--space", str(space_file), "--out", str(out), *FAST])
    one_line_error(code, capsys.readouterr().err, str(tmp_path), "another onnxnas run is writing this latency table")
    assert not out.exists() and not Path(f"{out}.journal.jsonl").exists()


def test_merge_out_equal_to_an_input_is_refused(built: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    before = built.read_bytes()
    via_other_path = tmp_path / ".." / tmp_path.name / ".." / built.parent.name / built.name
    for out in (built, via_other_path):
        code = main(["lut", "merge", str(built), "--out", str(out)])
        one_line_error(code, capsys.readouterr().err, str(out), "--out is one of the shards being merged")
    assert built.read_bytes() == before


def test_merging_a_merged_table_is_refused(built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    merged = tmp_path / "merged.json"
    assert main(["lut", "merge", str(built), "--out", str(merged)]) == 0
    capsys.readouterr()
    code = main(["lut", "merge", str(merged), "--out", str(tmp_path / "again.json")])
    one_line_error(code, capsys.readouterr().err, str(merged), "is a merged table, not a shard")


def test_fill_hint_carries_the_tables_settings(space_file: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.json"
    assert main(["build-lut", "--device", "cpu", "--space", str(space_file), "--out", str(out), "--threads", "2",
                 "--warmup", "1", "--runs", "3", "--num-classes", "4", "--shard", "0/2", "--no-progress"]) == 0
    table = LatencyTable.load(out)
    with pytest.raises(Exception) as info:
        table.require(["irb:missing"])
    assert ("fill them with: onnxnas build-lut --device cpu --space SPACE_FILE --backend onnxruntime --precision fp32 "
            f"--threads 2 --warmup 1 --runs 3 --num-classes 4 --shard 0/2 --out {out}") in str(info.value)


def test_lut_show_into_a_closed_pipe() -> None:
    done = subprocess.run(f"'{sys.executable}' -m onnxnas lut show '{SHIPPED}' | head -1", shell=True,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.stdout == f"{SHIPPED}\n" and "Traceback" not in done.stderr and done.stderr == ""


def test_nan_kendall_tau_never_reaches_the_header() -> None:
    import numpy as np

    from onnxnas.lut.validate import error_metrics

    metrics = error_metrics(np.array([5.0, 5.0]), np.array([4.0, 6.0]))  # tied predictions: tau undefined
    assert metrics["kendall_tau"] is None and metrics["mape_pct"] == pytest.approx(100 * (0.25 + 1 / 6) / 2)
    json.dumps(metrics, allow_nan=False)


# ---- a table measured elsewhere must say so --------------------------------------------------------

def test_table_built_here_records_its_environment_and_is_home(built: Path) -> None:
    from onnxnas.timing.environment import foreign_message, host_environment

    table = LatencyTable.load(built)
    host = host_environment("onnxruntime", 1)
    assert table.header["environment"] == host.to_dict()
    assert host.backend_version == __import__("onnxruntime").__version__ and host.cpu_flags is not None
    assert foreign_message(table) is None


@pytest.mark.parametrize("change, says", [
    ({"cpu": "Intel Xeon 8480"}, "CPU 'Intel Xeon 8480' there"),
    ({"backend_version": "1.31.1"}, "onnxruntime 1.31.1 there"),
    ({"cpu_flags": ["avx512f", "amx_tile"]}, "only here"),
    ({"threads": 512}, "512 threads there"),
], ids=["cpu", "backend-version", "cpu-flags", "threads"])
def test_foreign_table_warns_in_one_line(change: dict[str, Any], says: str, built: Path, tmp_path: Path) -> None:
    from onnxnas.timing.environment import foreign_message

    doc = json.loads(built.read_text())
    doc["header"]["environment"].update(change)
    (tmp_path / "f.json").write_text(json.dumps(doc))
    message = foreign_message(LatencyTable.load(tmp_path / "f.json"))
    assert message is not None and "\n" not in message and says in message
    assert f"fix: onnxnas lut check {tmp_path / 'f.json'}" in message


def test_arch_stats_on_the_shipped_table_warns(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["arch", "stats", str(EXAMPLE_ARCH), "--lut", str(SHIPPED)]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("onnxnas: warning:")]
    assert len(warnings) == 1 and f"{SHIPPED}: built on AMD EPYC, onnxruntime 1.31.1" in warnings[0]
    assert "CPU flags not recorded" in warnings[0] and f"onnxnas lut check {SHIPPED}" in warnings[0]


def test_lut_check_holds_and_drifts(built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["lut", "check", str(built), "--samples", "3", "--no-progress", "--space", doc_space(tmp_path), "--no-record"]
    assert main([*argv, "--tolerance", "10"]) == 0  # any real machine is within 10x of itself
    assert "holds: all 3 within 1000%" in capsys.readouterr().out
    doc = json.loads(built.read_text())
    for entry in doc["entries"].values():  # a table from a machine 1000x slower
        entry.update({k: v * 1000 for k, v in entry.items() if k.endswith("_us")})
    slow = tmp_path / "slow.json"
    slow.write_text(json.dumps(doc))
    assert main(["lut", "check", str(slow), "--samples", "3", "--no-progress", "--space", doc_space(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "DRIFTED: 3 of 3 beyond 10%" in out
    assert f"rebuild it on this machine with: onnxnas build-lut --device cpu --space SPACE_FILE" in out
    assert f"--out {tmp_path / 'slow.rebuilt.json'}" in out
    assert slow.read_text() == json.dumps(doc)  # checking never writes the table


def test_a_passed_check_is_recorded_and_silences_the_warning(built: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from onnxnas.timing.environment import foreign_message

    doc = json.loads(built.read_text())
    assert "host_checks" not in doc["header"]
    doc["header"]["environment"]["cpu"] = "Intel Xeon 8480"  # timed elsewhere, on a machine as fast as this one
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps(doc))
    assert "CPU 'Intel Xeon 8480' there" in foreign_message(LatencyTable.load(foreign))
    argv = ["lut", "check", str(foreign), "--samples", "3", "--no-progress", "--space", doc_space(tmp_path),
            "--tolerance", "10"]
    assert main([*argv, "--no-record"]) == 0 and foreign.read_text() == json.dumps(doc)
    assert main(argv) == 0
    assert f"recorded in {foreign} (header host_checks): commands on this host no longer warn" in capsys.readouterr().out
    assert main(argv) == 0  # a second pass replaces this host's record
    table = LatencyTable.load(foreign)
    (record,) = table.header["host_checks"]
    assert record["samples"] == 3 and record["tolerance"] == 10 and 0 < record["median_ratio"]
    assert foreign_message(table) is None and table.entries == LatencyTable.load(built).entries
    record["environment"]["cpu"] = "AMD EPYC 9654"  # a record of another host does not vouch for this one
    foreign.write_text(json.dumps({"header": table.header, "entries": doc["entries"]}))
    assert "CPU 'Intel Xeon 8480' there" in foreign_message(LatencyTable.load(foreign))


@pytest.mark.parametrize("record, says", [
    ("not an object", "host_checks[0]: expected an object"),
    ({"checked": "2026-12-02", "samples": 3, "tolerance": 0.1, "median_ratio": 1.0}, "host_checks[0].environment: required"),
    ({"environment": "ENV", "checked": "2026-12-02", "samples": 3, "tolerance": -1, "median_ratio": 1.0},
     "host_checks[0].tolerance: expected a number in (0, 10]"),
    ({"environment": "ENV", "checked": "2026-12-02", "samples": 3, "tolerance": 0.1, "median_ratio": 1.0, "x": 1},
     "host_checks[0].x: unknown field"),
], ids=["not-object", "no-environment", "negative-tolerance", "unknown-field"])
def test_a_bad_host_check_is_one_line(record: Any, says: str, built: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(built.read_text())
    if isinstance(record, dict) and record.get("environment") == "ENV":
        record["environment"] = doc["header"]["environment"]
    doc["header"]["host_checks"] = [record]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    assert main(["lut", "show", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert says in err


def doc_space(tmp_path: Path) -> str:
    path = tmp_path / "space.json"
    path.write_text(json.dumps(SPACE))
    return str(path)


def test_old_tables_still_load(tmp_path: Path) -> None:
    doc = shipped_doc()
    assert "environment" not in doc["header"]
    table = LatencyTable.load(SHIPPED)
    assert len(table.entries) == 101 and table.protocol.runs == 200
    no_optional = copy.deepcopy(doc)
    for name in ("protocol", "space", "identity", "calibration", "validation", "pending_keys", "counts"):
        del no_optional["header"][name]
    (tmp_path / "minimal.json").write_text(json.dumps(no_optional))
    assert LatencyTable.load(tmp_path / "minimal.json").per_call_overhead_us == 0.0
