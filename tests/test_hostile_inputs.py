"""A corpus of hostile inputs and faults, across the commands (issue 7, the readers and flags half).

Each case runs the CLI in-process the way a user would and asserts: exit status 2, exactly one
'onnxnas: error:' line and no traceback, the message names the file (and JSON path) or the flag,
and, where it applies, that nothing was written or lost. A case that would hang (a FIFO) is
stopped by an alarm, so a regression fails instead of blocking the run.

Only the CLI and long-standing helpers are imported, so the same corpus runs against older
checkouts to count how many of these cases they handled.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from onnxnas.arch import load_arch
from onnxnas.blocks import build_model
from onnxnas.cli import main
from onnxnas.space import load_space
from onnxnas.space.choose import make_arch
from kill_fixtures import kill_when_checkpointed
from search_fixtures import write_synthetic_table

REPO = Path(__file__).resolve().parents[1]
SEARCH = ["--space", "tiny", "--data", "synthetic", "--epochs", "3", "--warmup-epochs", "1",
          "--max-batches", "2", "--batch-size", "16"]
CHOICES = [{"kernel_size": 3}] + [{"kernel_size": 3, "se": False, "hidden_chs": 32}] * 3 + ["skip", "skip"]
HUGE = "1" + "0" * 5000  # an integer of 5001 digits: Python refuses to parse more than 4300


class Hang(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise Hang("the command did not finish: it hangs on this input")


def cli(capsys: pytest.CaptureFixture[str], *argv: object, limit_s: int = 60) -> tuple[int, str]:
    """Run ``onnxnas ARGV``: (exit status, stderr)."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(limit_s)
    try:
        code = main([str(a) for a in argv])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return code, capsys.readouterr().err


def refused(capsys: pytest.CaptureFixture[str], names: list[str], *argv: object) -> str:
    """The command exits 2 with one error line, no traceback, naming every string in ``names``."""
    code, err = cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert "Traceback" not in err
    assert sum(line.startswith("onnxnas: error:") for line in lines) == 1 and lines[-1].startswith("onnxnas: error:"), err
    for name in names:
        assert name in lines[-1], (name, lines[-1])
    return lines[-1]


def listing(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` with its size and mtime, to prove a failure changed nothing."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


# ---- shared inputs --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="module")
def arch_path(root: Path) -> Path:
    return make_arch(load_space("tiny"), CHOICES).save(root / "arch.json")


@pytest.fixture(scope="module")
def arch_doc(arch_path: Path) -> dict:
    return json.loads(arch_path.read_text())


@pytest.fixture(scope="module")
def lut(root: Path) -> Path:
    return write_synthetic_table(load_space("tiny"), root / "tiny-test.json")


@pytest.fixture(scope="module")
def search_run(root: Path, lut: Path) -> Path:
    out = root / "search"
    torch.set_num_threads(1)  # as the SIGKILL test's subprocesses (OMP_NUM_THREADS=1), so the floats agree
    assert main(["search", "--lut", str(lut), "--out", str(out), *SEARCH]) == 0
    return out


@pytest.fixture(scope="module")
def shipped(root: Path, arch_path: Path) -> Path:
    out = root / "shipped"
    assert main(["finalize", str(arch_path), "--out", str(out), "--no-engine", "--no-measure",
                 "--calib-samples", "2", "--verify-samples", "2"]) == 0
    return out


def copy_of(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / folder.name
    shutil.copytree(folder, target)
    return target


def write_json(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc))
    return path


def edited(doc: dict, edit: Callable[[dict], None]) -> dict:
    copy = json.loads(json.dumps(doc))
    edit(copy)
    return copy


# ---- arch and space readers (arch stats, train, build-lut) ----------------------------------------

ARCH_TEXTS = {
    "nan-resolution": (lambda text: text.replace('"resolution": 32', '"resolution": NaN'), "NaN"),
    "huge-integer": (lambda text: text.replace('"resolution": 32', f'"resolution": {HUGE}'), "digits"),
    "deep-nesting": (lambda text: text.replace('"provenance": {}', '"provenance": ' + "[" * 100_000 + "]" * 100_000),
                     "nested too deeply"),
}


@pytest.mark.parametrize("case", sorted(ARCH_TEXTS))
def test_arch_stats_refuses_malformed_json(case: str, arch_path: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    mutate, message = ARCH_TEXTS[case]
    bad = tmp_path / "arch.json"
    bad.write_text(mutate(arch_path.read_text()))
    refused(capsys, [str(bad), message], "arch", "stats", bad)


def test_arch_stats_refuses_invalid_utf8(arch_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "arch.json"
    bad.write_bytes(arch_path.read_bytes().replace(b'"tiny"', b'"ti\xffny"', 1))
    refused(capsys, [str(bad), "UTF-8"], "arch", "stats", bad)


def test_arch_stats_refuses_a_fifo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = fifo(tmp_path / "arch.json")
    refused(capsys, [str(bad), "not a regular file"], "arch", "stats", bad)


def test_train_refuses_a_huge_hidden_width(arch_doc: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write_json(tmp_path / "arch.json", edited(arch_doc, lambda d: d["layers"][1].update(hidden_chs=10**9)))
    refused(capsys, [str(bad), "$.layers[1].hidden_chs"], "train", bad, "--data", "synthetic", "--epochs", "1")
    assert not (tmp_path / "train").exists()


def test_train_refuses_an_arch_that_does_not_fit_its_space(arch_doc: dict, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    bad = write_json(tmp_path / "arch.json", edited(arch_doc, lambda d: d["layers"][1].update(kernel_size=7)))
    refused(capsys, [str(bad), "layer 1", "kernel 7"], "train", bad, "--data", "synthetic", "--epochs", "1",
            "--max-batches", "1")
    assert not (tmp_path / "train").exists()


SPACE_YAML = (REPO / "onnxnas" / "space" / "builtin" / "tiny.yaml").read_text()
SPACES = {
    "giant-out-chs": (lambda: SPACE_YAML.replace("out_chs: 32", "out_chs: 1000000000", 1), "out_chs"),
    "alias-bomb": (lambda: "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(12)), "aliases"),
}


@pytest.mark.parametrize("case", sorted(SPACES))
def test_build_lut_space_reader_refuses(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text, message = SPACES[case]
    space = tmp_path / "space.yaml"
    space.write_text(text())
    refused(capsys, [str(space), message], "build-lut", "--device", "cpu", "--space", space,
            "--out", tmp_path / "lut.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]


def test_build_lut_threads_flag_is_bounded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refused(capsys, ["--threads"], "build-lut", "--device", "cpu", "--threads", "100000", "--out", tmp_path / "l.json")
    assert not any(tmp_path.iterdir())


# ---- numeric flags --------------------------------------------------------------------------------

SEARCH_FLAGS = [("--lr", "inf"), ("--alpha", "nan"), ("--weight-decay", "nan"), ("--seed", str(10**23)),
                ("--lambda", "0.5,inf"), ("--batch-size", str(10**9)), ("--epochs", HUGE), ("--arch-lr", "-inf")]


@pytest.mark.parametrize("flag,value", SEARCH_FLAGS, ids=[f for f, _ in SEARCH_FLAGS])
def test_search_flags_are_finite_and_bounded(flag: str, value: str, lut: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    refused(capsys, [flag], "search", "--lut", lut, "--out", out, *SEARCH, flag, value)
    assert not out.exists()


TRAIN_FLAGS = [("--lr", "inf"), ("--weight-decay", "nan"), ("--seed", str(10**23)), ("--label-smoothing", "nan")]


@pytest.mark.parametrize("flag,value", TRAIN_FLAGS, ids=[f for f, _ in TRAIN_FLAGS])
def test_train_flags_are_finite_and_bounded(flag: str, value: str, arch_path: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    refused(capsys, [flag], "train", arch_path, "--data", "synthetic", "--epochs", "1", "--max-batches", "2",
            "--out", out, flag, value)
    assert not out.exists()  # `--lr inf` used to train, save NaN weights and exit 0


FINALIZE_FLAGS = [("--calib-samples", str(10**8)), ("--verify-samples", "0"), ("--seed", str(10**23)),
                  ("--runs", "nan")]


@pytest.mark.parametrize("flag,value", FINALIZE_FLAGS, ids=[f for f, _ in FINALIZE_FLAGS])
def test_finalize_flags_are_bounded(flag: str, value: str, arch_path: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    refused(capsys, [flag], "finalize", arch_path, "--out", out, "--no-engine", flag, value)
    assert not out.exists()


@pytest.mark.parametrize("flag,value", [("--threads", "100000"), ("--runs", str(10**9))])
def test_bench_flags_are_bounded(flag: str, value: str, shipped: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refused(capsys, [flag], "bench", shipped / "model.onnx", "--device", "cpu", flag, value)


# ---- checkpoints given to finalize ----------------------------------------------------------------

def _weights(arch_path: Path) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_model(load_arch(arch_path)).state_dict()


def test_finalize_accepts_a_state_dict_wrapper(arch_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.save({"state_dict": _weights(arch_path), "epoch": 3}, tmp_path / "w.pt")
    code, err = cli(capsys, "finalize", arch_path, "--weights", tmp_path / "w.pt", "--out", tmp_path / "out",
                    "--no-engine", "--no-measure", "--calib-samples", "2", "--verify-samples", "2")
    assert code == 0, err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["weights"] == f"checkpoint {tmp_path / 'w.pt'}"


def _int64(state: dict) -> dict:
    return {k: (v * 1000).long() if v.is_floating_point() else v for k, v in state.items()}


def _nan(state: dict) -> dict:
    state = dict(state)
    state["head.fc.weight"] = state["head.fc.weight"].clone()
    state["head.fc.weight"][0, 0] = float("nan")
    return state


def _zeros(state: dict) -> dict:
    return {k: torch.zeros_like(v) if k.endswith(("weight", "bias")) else v for k, v in state.items()}


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


CHECKPOINTS = {
    "int64-weights": (lambda s, p: torch.save(_int64(s), p), ["int64", "'stem.0.weight'"]),
    "nan-weights": (lambda s, p: torch.save(_nan(s), p), ["'head.fc.weight'", "NaN"]),
    "dead-network": (lambda s, p: torch.save(_zeros(s), p), ["all zeros"]),
    "pickled-code": (lambda s, p: torch.save({"state_dict": {"x": _Exploit(p.with_suffix(".pwned"))}}, p),
                     ["not a plain-tensor checkpoint"]),
    "truncated": (lambda s, p: (torch.save(s, p), p.write_bytes(p.read_bytes()[:300])), ["cannot read checkpoint"]),
    "bad-hidden-index": (lambda s, p: torch.save({"onnxnas_checkpoint": 1, "state_dict": s,
                                                  "hidden_index": {"1": "abc"}}, p), ["hidden_index"]),
    "fifo": (lambda s, p: os.mkfifo(p), ["not a regular file"]),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINTS))
def test_finalize_refuses_bad_checkpoints(case: str, arch_path: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    make, names = CHECKPOINTS[case]
    weights = tmp_path / "w.pt"
    make(_weights(arch_path), weights)
    out = tmp_path / "out"
    refused(capsys, [str(weights), *names] if case != "dead-network" else names, "finalize", arch_path, "--weights", weights, "--out", out, "--no-engine",
            "--no-measure", "--calib-samples", "2", "--verify-samples", "2")
    assert not out.exists() and not weights.with_suffix(".pwned").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind


def test_finalize_out_that_is_a_file(arch_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.write_text("keep me")
    refused(capsys, [str(out)], "finalize", arch_path, "--out", out, "--no-engine", "--no-measure")
    assert out.read_text() == "keep me"


# ---- search checkpoints (resume) and the output lock -----------------------------------------------

def _poison_last(run: Path, edit: Callable[[dict], object]) -> Path:
    last = run / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    edit(state)
    torch.save(state, last)
    return last


SEARCH_STATES = {
    "garbage": (lambda last: last.write_bytes(b"\x00garbage" * 10), ["cannot read search checkpoint"]),
    "epoch-string": (lambda last: _poison_last(last.parents[1], lambda s: s.update(epoch="3")), ["$.epoch"]),
    "epoch-huge": (lambda last: _poison_last(last.parents[1], lambda s: s.update(epoch=10**9)), ["$.epoch"]),
    "no-optimizer": (lambda last: _poison_last(last.parents[1], lambda s: s.pop("weight_opt")), ["weight_opt"]),
    "nan-model": (lambda last: _poison_last(last.parents[1], lambda s: next(
        v for v in s["model"].values() if v.is_floating_point()).fill_(float("nan"))), ["NaN"]),
    "bad-rng": (lambda last: _poison_last(last.parents[1], lambda s: s.update(rng={"torch": "seed"})), ["$.rng.torch"]),
}


@pytest.mark.parametrize("case", sorted(SEARCH_STATES))
def test_resume_refuses_a_damaged_search_checkpoint(case: str, search_run: Path, lut: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    run = copy_of(search_run, tmp_path)
    damage, names = SEARCH_STATES[case]
    last = run / "checkpoints" / "last.pt"
    damage(last)
    before = listing(run)
    refused(capsys, [str(last), *names], "search", "--lut", lut, "--out", run, *SEARCH, "--resume")
    assert listing(run) == before  # nothing overwritten: arch.json, weights.pt, metrics.jsonl as they were


def test_search_out_that_is_a_file(lut: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.write_text("keep me")
    refused(capsys, [str(out)], "search", "--lut", lut, "--out", out, *SEARCH)
    assert out.read_text() == "keep me"


def test_a_second_search_on_the_same_out_fails_at_once(lut: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".onnxnas-search.lock", "w") as lock:  # what a running search holds
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        refused(capsys, [str(out), "another onnxnas run"], "search", "--lut", lut, "--out", out, *SEARCH)
    assert sorted(p.name for p in out.iterdir()) == [".onnxnas-search.lock"]


def test_search_refuses_a_lut_with_nan(lut: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "lut.json"
    bad.write_text(lut.read_text().replace('"median_us": 23.0', '"median_us": NaN', 1))
    assert "NaN" in bad.read_text()
    refused(capsys, [str(bad)], "search", "--lut", bad, "--out", tmp_path / "out", *SEARCH)
    assert not (tmp_path / "out" / "arch.json").exists()


# ---- plot: metrics.jsonl ----------------------------------------------------------------------------

def _metrics_lines(run: Path) -> list[str]:
    return (run / "metrics.jsonl").read_text().splitlines()


METRICS = {
    "nan": (lambda lines: [lines[0], lines[1].replace('"train_ce": ', '"train_ce": NaN, "x": ', 1), *lines[2:]],
            "metrics.jsonl:2"),
    "missing-alive": (lambda lines: [*lines[:2], json.dumps({k: v for k, v in json.loads(lines[2]).items()
                                                             if k != "alive"})], "metrics.jsonl:3"),
    "torn-line": (lambda lines: [*lines[:2], lines[2][:25]], "metrics.jsonl:3"),
    "string-number": (lambda lines: [json.dumps({**json.loads(lines[0]), "lat_us": "fast"}), *lines[1:]],
                      "metrics.jsonl:1"),
    "deep-nesting": (lambda lines: [lines[0], "[" * 100_000 + "]" * 100_000], "metrics.jsonl:2"),
    "empty": (lambda lines: [], "metrics.jsonl"),
}


@pytest.mark.parametrize("case", sorted(METRICS))
def test_plot_refuses_bad_metrics(case: str, search_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = copy_of(search_run, tmp_path)
    mutate, where = METRICS[case]
    (run / "metrics.jsonl").write_text("\n".join(mutate(_metrics_lines(run))) + "\n")
    refused(capsys, [where], "plot", run)
    assert not (run / "search_curves.png").exists()


def test_plot_refuses_a_fifo_metrics_file(search_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = copy_of(search_run, tmp_path)
    (run / "metrics.jsonl").unlink()
    fifo(run / "metrics.jsonl")
    refused(capsys, ["metrics.jsonl", "not a regular file"], "plot", run)


def test_plot_out_that_is_a_file(search_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pngs"
    out.write_text("keep me")
    refused(capsys, [str(out)], "plot", search_run, "--out", out)
    assert out.read_text() == "keep me"


# ---- verify and bench: manifest, references, ONNX files ---------------------------------------------

def _edit_manifest(folder: Path, edit: Callable[[dict], object]) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


MANIFESTS = {
    "unknown-precision": (lambda m: m.update(precision="fp64"), "$.precision"),
    "onnx-record-a-string": (lambda m: m["files"].update(onnx="model.onnx"), "$.files.onnx"),
    "sha256-a-number": (lambda m: m["files"]["onnx"].update(sha256=12), "$.files.onnx.sha256"),
    "no-files": (lambda m: m.pop("files"), "$.files"),
}


@pytest.mark.parametrize("case", sorted(MANIFESTS))
def test_verify_refuses_a_bad_manifest(case: str, shipped: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = copy_of(shipped, tmp_path)
    edit, path = MANIFESTS[case]
    _edit_manifest(folder, edit)
    refused(capsys, ["manifest.json", path], "verify", folder)


def test_verify_refuses_a_torn_manifest(shipped: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = copy_of(shipped, tmp_path)
    text = (folder / "manifest.json").read_text()
    (folder / "manifest.json").write_text(text[: len(text) // 2])
    refused(capsys, ["manifest.json", "line"], "verify", folder)


def test_verify_refuses_garbage_reference_outputs(shipped: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = copy_of(shipped, tmp_path)
    (folder / "reference_outputs.json").write_text('{"lst": [["pytorch", [{"output": {"array": "AAAA"}}]]]}')
    refused(capsys, ["reference_outputs.json"], "verify", folder)


def test_bench_refuses_a_non_numeric_lut_prediction(shipped: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    folder = copy_of(shipped, tmp_path)
    _edit_manifest(folder, lambda m: m["latency"]["lut"].update(predicted_us="fast"))
    refused(capsys, ["manifest.json", "$.latency.lut.predicted_us"], "bench", folder / "model.onnx", "--device", "cpu",
            "--warmup", "1", "--runs", "5")


def test_bench_refuses_a_fifo_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = fifo(tmp_path / "model.onnx")
    refused(capsys, [str(model)], "bench", model, "--device", "cpu", "--warmup", "1", "--runs", "5")


def test_bench_refuses_a_garbage_onnx_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"\xff" * 64)
    refused(capsys, [str(model), "cannot read ONNX model"], "bench", model, "--device", "cpu", "--warmup", "1",
            "--runs", "5")


# ---- train: data and outputs ---------------------------------------------------------------------

def test_train_refuses_an_image_folder_of_fifos(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arch_path = make_arch(load_space("tiny"), CHOICES, num_classes=3).save(tmp_path / "arch.json")
    for name in ("a", "b", "c"):  # one image each for train, val and test
        fifo(tmp_path / "data" / name / "0.png")
    refused(capsys, ["0.png", "not a regular file"], "train", arch_path, "--data", tmp_path / "data", "--epochs", "1",
            "--batch-size", "1", "--max-batches", "1", "--out", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_train_out_that_is_a_file(arch_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.write_text("keep me")
    started = time.perf_counter()
    refused(capsys, [str(out)], "train", arch_path, "--data", "synthetic", "--epochs", "1", "--max-batches", "2",
            "--out", out)
    assert out.read_text() == "keep me"
    assert time.perf_counter() - started < 30


# ---- a real SIGKILL ------------------------------------------------------------------------------

@pytest.mark.slow
def test_search_killed_with_sigkill_resumes_without_losing_or_repeating_an_epoch(search_run: Path, lut: Path,
                                                                                 tmp_path: Path) -> None:
    """Kill the process (no cleanup runs) once the first branch epoch is checkpointed, resume, and get
    exactly the uninterrupted run's epochs and architecture."""
    out = tmp_path / "killed"
    resume = kill_when_checkpointed(["search", "--lut", str(lut), "--out", str(out), *SEARCH],
                                    out / "checkpoints" / "last.pt", poll_s=0.02)
    assert not (out / "arch.json").exists()
    resumed = resume()
    assert resumed.returncode == 0, resumed.stderr

    def epochs(run: Path) -> list[dict]:
        return [{k: v for k, v in json.loads(line).items() if k not in ("epoch_time_s", "epoch_cpu_s")}
                for line in (run / "metrics.jsonl").read_text().splitlines()]

    assert [m["epoch"] for m in epochs(out)] == [1, 2, 3]
    for got, want in zip(epochs(out), epochs(search_run), strict=True):  # floats: another process, same math
        assert got.keys() == want.keys()
        for key, value in want.items():
            assert got[key] == (pytest.approx(value, rel=1e-5) if isinstance(value, float) else value), key
    assert json.loads((out / "arch.json").read_text())["layers"] == json.loads((search_run / "arch.json").read_text())["layers"]
