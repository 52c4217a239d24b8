"""Side by side with the peers: who gives the better accuracy at the same measured latency, on digits, with
`tiny` or MobileNetV2 (`mbv2`'s stages at ``--resolution``, 10 classes) as the network.

Protocol (one run, one machine):
- **Same start**: the widest network of the space (`tiny`: k5, SE everywhere, no skips, widest hidden
  widths; `mbv2`: the dense MobileNetV2 1.0). onnxnas searches mbv2 with elastic depth (every layer of a
  stage but its first skippable, as PruNet's spaces have) and its ten hidden-width fractions; the stage
  output widths stay fixed, where the peers may prune them.
- **Same data**: digits with its one fixed split for every model and seed: train, validation (FastNAS's
  subnet scoring) and test (the accuracy reported, touched by nothing else).
- **Same recipe**: every model is trained with `onnxnas train`'s loop (`onnxnas.train.train_model`,
  SGD + cosine + label smoothing) for ``--epochs`` epochs per seed: onnxnas's found arch from scratch
  (as `onnxnas train` does), the peers' pruned networks fine-tuned from the dense network trained alike.
- **One timing tool**: every candidate and every result is exported with onnxnas.export and timed with
  onnxnas's ONNX Runtime backend (CPU, 1 thread, pinned, canary-gated median), as `onnxnas bench` does.
  onnxnas's search uses an fp32 LUT that this script builds on the same machine first.
- **Targets**: fractions of the measured dense latency (``--targets``).
- **Quiet re-timing**: the search-time timings share the machine with training (two runs at once belong
  on separate cores: ``taskset -c 0`` / ``-c 1``), so each row keeps its model's ONNX and
  ``--remeasure OUT`` re-times them all in interleaved rounds on an idle machine: the latencies to report.

Methods:
- **onnxnas**: `onnxnas search --method prunet --target-latency-us X` (alpha bisected by the search,
  the budget checked on the calibrated LUT), searched once (seed 0), retrained per seed.
- **Torch-Pruning** magnitude (L2) and Taylor, each also with ``round_to=8`` (``-r8``: every width a
  multiple of 8, ORT's CPU channel blocking; without it a ratio leaves widths such as 117 that run slower
  than the dense 128): neither can target latency, so this script searches each
  one's own knob, the uniform pruning ratio, timing every candidate with the backend above, and keeps the
  mildest ratio that meets the target (the fastest reachable if none does, marked "MISSES target"). The
  knob is not monotone in latency, so a plain bisection misses the floor: on `tiny`, ratio 0.90 gives
  44.8 us but 0.94-0.97 give 84-109 us, because once a ratio would round a coupled group (the stem and
  the residual widths) to zero channels Torch-Pruning leaves that group whole. The search therefore times
  a grid of ``--grid`` knob values first, then bisects the bracket of the mildest grid value that meets
  the target; where none does, it refines around the fastest value (the floor lies between grid values).
  A target's find time is the grid's plus its own search's: what that target alone costs.
- **ModelOpt FastNAS** (`modelopt.torch.prune`, mode "fastnas", FLOPs constraint): likewise, the FLOPs
  percentage is searched against the measured latency; FastNAS runs its own subnet search inside each call.
- **int8**: the onnxnas model of each target, as onnxnas's int8 QDQ pipeline (`deploy.graph.deployable_onnx`)
  and as ORT's `quantize_static` of its fp32 export (bench_int8.py's settings), calibrated on 32 train images.

Reported per (target, method): accuracy mean ± std over seeds, the paired per-seed difference to onnxnas,
measured latency, MACs and parameters (onnxnas.stats on the PyTorch module), and the wall and CPU seconds
of finding the model (search or knob search) and of training it (mean per seed).

Measured on 2 CPU cores (ORT 1.32, 1 thread; latencies from --remeasure, accuracy on the test split, 3 seeds):
  tiny (dense 233.8 us, 99.63%), targets 0.2/0.3/0.5x: onnxnas 99.26 +- 0.43% at 35.7 us, 99.35 +- 0.16% at
  67.7 us, 99.35 +- 0.16% at 67.4 us; Torch-Pruning's floor is 60 us (96.1-96.3% there; 98.05-98.70% at
  0.3x), round_to=8 83.5 us (misses 0.2x and 0.3x; 99.35% at 0.5x); FastNAS cannot prune tiny (SE widths).
  mbv2 at 32 px (dense 264.4 us, 98.33%), targets 0.3/0.4/0.5x: onnxnas none / 98.33 +- 0.28% at 104.3 us /
  97.59 +- 0.90% at 114.3 us; Torch-Pruning only ratio 0.97 meets (80 us, 73-79%); FastNAS floor 161 us.
  int8: onnxnas QDQ beats ORT quantize_static on tiny (51.0 vs 83.9 us) but not on mbv2 (147.8 vs 116.9 us),
  and is slower than fp32 on both at this size.

Installing the peers (after torch, as the README does):

    pip install torch==2.13.0 && pip install -e ".[peers]" && pip install --no-deps torchprofile==0.0.4
    python -c "import torch; print(torch.__version__)"      # still 2.13.0+cpu

Usage: python bench/bench_peers.py [--space tiny|mbv2] [--resolution 32] [--targets 0.15,0.27,0.5]
                                   [--seeds 0,1,2] [--epochs 20] [--search-epochs 20] [--bisect-branches 6]
                                   [--grid 12] [--methods onnxnas,tp-magnitude,tp-taylor,fastnas]
                                   [--search-args '--max-batches 8 --min-arch-steps 0']
       python bench/bench_peers.py --quick     # 1 target, 1 seed, 2 epochs: checks the pipeline, not the claim
       python bench/bench_peers.py --remeasure OUT [--rounds 5]   # re-time a finished run's models, quietly
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import re
import shlex
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from onnxnas.arch import Arch, load_arch
from onnxnas.blocks import build_model
from onnxnas.cli import main as cli
from onnxnas.data import DataSplits, load_data
from onnxnas.deploy.concrete import layer_weight_bits
from onnxnas.deploy.graph import deployable_onnx
from onnxnas.export import INPUT_NAME, export_bytes, export_onnx
from onnxnas.space import load_space
from onnxnas.space.choose import extreme_arch
from onnxnas.stats import count_stats
from onnxnas.timing.base import TimingProtocol
from onnxnas.timing.noise import RepeatedMeasurement
from onnxnas.timing.onnxruntime import OnnxRuntimeBackend
from onnxnas.train import TrainConfig, evaluate, train_model
from spaces import mbv2_at  # bench/ is the script's folder

PROTOCOL = TimingProtocol(warmup_runs=50, runs=300)
PASSES = 3  # timing passes per model at search time (their fastest median)
KNOB_STEPS = 4  # bisection steps inside a grid bracket: 1/16 of the grid spacing


@dataclasses.dataclass
class Row:
    target_us: float
    method: str
    accuracies: list[float]
    latency_us: float
    macs: int
    params: int
    find_s: tuple[float, float]  # wall, CPU of finding the model
    train_s: tuple[float, float]  # wall, CPU of training it, mean per seed
    note: str = ""
    onnx: str = ""  # the timed model (seed 0's), kept for --remeasure


class Clock:
    """Wall and CPU seconds of a block (CPU: this process, all threads)."""

    def __enter__(self) -> "Clock":
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def measured_us(model: nn.Module, input_shape: tuple[int, ...], folder: Path, name: str = "candidate") -> float:
    """The one timing tool: onnxnas export (to ``folder/<name>.onnx``) + onnxnas's ONNX Runtime backend.

    The fastest of PASSES pass medians: while training runs on the other core, a single pass of the same
    MobileNetV2 read 275-472 us; interference only ever adds time, so the fastest pass is the estimate.
    """
    path = export_onnx(copy.deepcopy(model).cpu().eval(), input_shape, folder / f"{name}.onnx")
    backend = OnnxRuntimeBackend(threads=1)
    return min(backend.measure_onnx(path, PROTOCOL).median_us for _ in range(PASSES))


def slug(method: str) -> str:
    """A file name for a method's row: ``dense (start)`` -> ``dense-start``."""
    return re.sub(r"[^A-Za-z0-9]+", "-", method).strip("-")


def kept_row(row: Row, model: nn.Module, input_shape: tuple[int, ...], folder: Path) -> Row:
    """``row`` with the latency of ``model``, whose ONNX stays in ``folder`` for --remeasure."""
    name = slug(row.method)
    row.latency_us = measured_us(model, input_shape, folder, name)
    row.onnx = str(folder / f"{name}.onnx")
    return row


class Unreachable(Exception):
    """The peer cannot build a model at this knob value (e.g. FastNAS: constraint outside its space)."""


@dataclasses.dataclass
class Found:
    model: nn.Module
    knob: float
    latency_us: float
    met: bool
    find_s: tuple[float, float]  # wall, CPU: the grid plus this target's bisection


class KnobSearch:
    """One peer's knob on one dense network against measured latency, shared by every target.

    The knob runs from ``mild`` (the dense network) to ``fast``. ``grid`` values are timed once; a target
    then bisects the bracket between the mildest grid value that meets it and the grid value before,
    or, where no grid value meets it, refines around the fastest one.
    """

    def __init__(self, make: Callable[[float], nn.Module], mild: float, fast: float, grid: int,
                 input_shape: tuple[int, ...], folder: Path) -> None:
        self.make, self.mild, self.fast, self.shape, self.folder = make, mild, fast, input_shape, folder
        self.tried: dict[float, tuple[nn.Module, float] | None] = {}
        self.knobs = [mild + (fast - mild) * (i + 1) / grid for i in range(grid)]
        with Clock() as clock:
            self.grid_us = [self._attempt(k) for k in self.knobs]
        self.grid_s = (clock.wall, clock.cpu)

    def _attempt(self, knob: float) -> float | None:
        if knob not in self.tried:
            try:
                model = self.make(knob)
                self.tried[knob] = (model, measured_us(model, self.shape, self.folder))
            except Unreachable:
                self.tried[knob] = None
        result = self.tried[knob]
        return None if result is None else result[1]

    def _built(self) -> list[tuple[float, nn.Module, float]]:
        return [(k, r[0], r[1]) for k, r in self.tried.items() if r is not None]

    def _refine_floor(self) -> None:
        """Halve the spacing around the fastest knob tried, KNOB_STEPS times: the floor lies between grid values."""
        step = (self.fast - self.mild) / len(self.knobs)
        low, high = sorted((self.mild, self.fast))
        for _ in range(KNOB_STEPS):
            knob = min(self._built(), key=lambda t: t[2])[0]
            step /= 2
            for k in (knob - step, knob + step):
                if low < k < high:
                    self._attempt(k)

    def best(self, target_us: float) -> Found:
        """The mildest knob tried whose model meets ``target_us``; where none does, the fastest (the floor)."""
        with Clock() as clock:
            first = next((i for i, us in enumerate(self.grid_us) if us is not None and us <= target_us), None)
            if first is not None:
                low, high = (self.knobs[first - 1] if first else self.mild), self.knobs[first]
                for _ in range(KNOB_STEPS):
                    mid = (low + high) / 2
                    us = self._attempt(mid)
                    if us is not None and us <= target_us:
                        high = mid
                    else:
                        low = mid
            elif self._built():
                self._refine_floor()
        built = self._built()
        if not built:
            raise Unreachable(f"no model could be built between knob {self.mild:g} and {self.fast:g}")
        feasible = [t for t in built if t[2] <= target_us]
        knob, model, us = (min(feasible, key=lambda t: abs(t[0] - self.mild)) if feasible else min(built, key=lambda t: t[2]))
        return Found(model, knob, us, bool(feasible), (self.grid_s[0] + clock.wall, self.grid_s[1] + clock.cpu))


# ---- peers ---------------------------------------------------------------------------------------
def tp_pruned(dense: nn.Module, ratio: float, importance: str, data: DataSplits, shape: tuple[int, ...],
              round_to: int | None = None) -> nn.Module:
    """Torch-Pruning's MetaPruner at a uniform ``ratio`` (the classifier kept whole); ``round_to`` keeps every
    width a multiple of it, as a user aiming at a CPU/GPU kernel's channel blocking would set."""
    import torch_pruning as tp

    model = copy.deepcopy(dense).cpu().train()
    imp = tp.importance.TaylorImportance() if importance == "taylor" else tp.importance.MagnitudeImportance(p=2)
    example = torch.zeros(shape)
    pruner = tp.pruner.MetaPruner(model, example, importance=imp, pruning_ratio=ratio,
                                  ignored_layers=[model.head.fc], round_to=round_to)
    if importance == "taylor":  # Taylor importance needs the loss gradient of a few training batches
        model.zero_grad()
        for (x, y), _ in zip(DataLoader(data.train, batch_size=64), range(4)):
            F.cross_entropy(model(x), y).backward()
    pruner.step()
    return model


def fastnas_pruned(dense: nn.Module, flops_pct: float, data: DataSplits, shape: tuple[int, ...],
                   folder: Path) -> nn.Module:
    """ModelOpt FastNAS under a FLOPs constraint; its subnet search scores on the held-out split."""
    import modelopt.torch.prune as mtp

    model = copy.deepcopy(dense).cpu()
    loader = DataLoader(data.train, batch_size=64, shuffle=False)
    try:
        pruned, _ = mtp.prune(model, mode="fastnas", constraints={"flops": f"{flops_pct:.2f}%"},
                              dummy_input=torch.zeros(shape),
                              config={"data_loader": loader,
                                      "score_func": lambda m: evaluate(m, data.val, torch.device("cpu")),
                                      "checkpoint": str(folder / f"fastnas-{flops_pct:.2f}.pth")})
    except ValueError as exc:
        if "constraints can be satisfied" in str(exc):  # below FastNAS's floor (it never prunes SE or the head)
            raise Unreachable(str(exc)) from exc
        raise
    except AssertionError as exc:
        if "no searchable hparams" in str(exc):
            raise RuntimeError("FastNAS found no width it can search: its BinarySearcher takes out_channels / "
                               "out_features hparams only, and every configurable width here is tied to an SE "
                               "block's conv_reduce.in_channels") from exc
        raise
    return pruned


# ---- the int8 row ----------------------------------------------------------------------------------
def onnx_accuracy(model: bytes, data: DataSplits) -> float:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    correct = total = 0
    for x, y in DataLoader(data.test, batch_size=1):
        correct += int(session.run(None, {INPUT_NAME: x.numpy()})[0].argmax(1)[0] == int(y[0]))
        total += 1
    return correct / total


def int8_rows(arch: Arch, model: nn.Module, data: DataSplits, target_us: float, folder: Path) -> list[Row]:
    from bench_int8 import ort_quantize_static  # bench/ is the script's folder

    calibration = [x.unsqueeze(0).numpy() for x, _ in (data.train[i] for i in range(32))]
    model = copy.deepcopy(model).cpu().eval()
    with Clock() as ours_clock:
        ours, _ = deployable_onnx(model, arch.input_shape, "int8", layer_weight_bits(arch, "int8"), calibration)
    with Clock() as ort_clock:
        theirs = ort_quantize_static(export_bytes(model, arch.input_shape), calibration)
    stats = count_stats(model, arch.input_shape)
    rows = []
    for name, proto_bytes, clock in (("onnxnas int8", ours.SerializeToString(), ours_clock),
                                     ("ORT quantize_static", theirs, ort_clock)):
        path = folder / f"{slug(name)}.onnx"
        path.write_bytes(proto_bytes)
        us = OnnxRuntimeBackend(threads=1).measure_onnx(path, PROTOCOL).median_us
        rows.append(Row(target_us, name, [onnx_accuracy(proto_bytes, data)], us, stats.macs, stats.params,
                        (clock.wall, clock.cpu), (0.0, 0.0), "seed 0 weights", str(path)))
    return rows


# ---- the table -------------------------------------------------------------------------------------
def fmt_acc(values: list[float]) -> str:
    pct = [100 * v for v in values]
    return f"{statistics.mean(pct):6.2f} ± {statistics.stdev(pct):4.2f}" if len(pct) > 1 else f"{pct[0]:6.2f}       "


def paired(row: Row, ref: Row | None) -> str:
    if ref is None or row is ref or len(row.accuracies) != len(ref.accuracies):
        return ""
    return " ".join(f"{100 * (a - b):+.2f}" for a, b in zip(row.accuracies, ref.accuracies))


def print_table(rows: list[Row], dense_us: float) -> None:
    print(f"\n{'target':>14} {'method':<20} {'accuracy %':>15} {'vs onnxnas (per seed)':>22} {'meas us':>8} "
          f"{'MACs':>9} {'params':>8} {'find s wall/CPU':>16} {'train s wall/CPU':>17}  note")
    for row in rows:
        ref = next((r for r in rows if r.target_us == row.target_us and r.method == "onnxnas"), None)
        target = f"{row.target_us:.1f} ({row.target_us / dense_us:.2f}x)" if row.target_us else "dense"
        print(f"{target:>14} {row.method:<20} {fmt_acc(row.accuracies):>15} {paired(row, ref):>22} {row.latency_us:8.1f} "
              f"{row.macs:9,d} {row.params:8,d} {row.find_s[0]:7.0f}/{row.find_s[1]:<8.0f} "
              f"{row.train_s[0]:8.0f}/{row.train_s[1]:<8.0f}  {row.note}")


def train_seeds(make_model: Callable[[int], nn.Module], data: DataSplits, cfg: TrainConfig,
                seeds: list[int]) -> tuple[list[float], list[nn.Module], tuple[float, float]]:
    accs, models, wall, cpu = [], [], 0.0, 0.0
    for seed in seeds:
        with Clock() as clock:
            torch.manual_seed(seed)
            model, history = train_model(make_model(seed), data, dataclasses.replace(cfg, seed=seed),
                                         torch.device("cpu"), progress=False)
        accs.append(evaluate(model, data.test, torch.device("cpu")))
        models.append(model)
        wall, cpu = wall + clock.wall, cpu + clock.cpu
    return accs, models, (wall / len(seeds), cpu / len(seeds))


def network(args: argparse.Namespace, out: Path) -> tuple[str, Path, list[str]]:
    """The space (a name or a file), an fp32 LUT built on this machine into ``out`` (so the search's
    predictions hold here, where a shipped table was timed elsewhere), and the search flags it needs."""
    space_arg = "tiny" if args.space == "tiny" else str(mbv2_at(args.resolution, out, skippable=True))
    lut = out / f"{args.space}-cpu-onnxruntime-fp32.json"
    if not lut.exists() and cli(["build-lut", "--space", space_arg, "--device", "cpu", "--out", str(lut),
                                  "--no-progress"]) != 0:
        raise SystemExit(f"build-lut failed for {space_arg}")
    return space_arg, lut, ([] if args.space == "tiny" else ["--t-init", "0.09"])  # mbv2: 10 widths + a skip


def knob_searches(methods: list[str], dense_models: list[nn.Module], data: DataSplits, shape: tuple[int, ...],
                  grid: int, folder: Path) -> dict[str, list[KnobSearch] | str]:
    """Each peer's knob search on each seed's own dense network (or why the peer has no row)."""
    makers: dict[str, tuple[Callable[[nn.Module, float], nn.Module], float, float]] = {
        "tp-magnitude": (lambda d, r: tp_pruned(d, r, "magnitude", data, shape), 0.0, 0.97),
        "tp-taylor": (lambda d, r: tp_pruned(d, r, "taylor", data, shape), 0.0, 0.97),
        "tp-magnitude-r8": (lambda d, r: tp_pruned(d, r, "magnitude", data, shape, round_to=8), 0.0, 0.97),
        "tp-taylor-r8": (lambda d, r: tp_pruned(d, r, "taylor", data, shape, round_to=8), 0.0, 0.97),
        "fastnas": (lambda d, p: fastnas_pruned(d, p, data, shape, folder), 100.0, 1.0),
    }
    searches: dict[str, list[KnobSearch] | str] = {}
    for name in (m for m in methods if m in makers):
        make, mild, fast = makers[name]
        try:
            searches[name] = [KnobSearch(lambda k, d=dense: make(d, k), mild, fast, grid, shape, folder)
                              for dense in dense_models]
        except ImportError as exc:
            searches[name] = f"not installed ({exc.name}): pip install -e '.[peers]'"
        except Exception as exc:  # a peer that cannot handle these blocks is a result, not a crash
            searches[name] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
    return searches


def peer_row(name: str, searches: list[KnobSearch], target: float, data: DataSplits, cfg: TrainConfig,
             seeds: list[int], shape: tuple[int, ...], folder: Path) -> Row:
    found = [search.best(target) for search in searches]
    accs, models, train_s = train_seeds(lambda s: copy.deepcopy(found[seeds.index(s)].model), data, cfg, seeds)
    stats = count_stats(models[0], shape)
    knob_name = "FLOPs %" if name == "fastnas" else "ratio"
    note = f"{knob_name} {', '.join(f'{f.knob:.3g}' for f in found)}" + ("" if all(f.met for f in found) else "; MISSES target")
    find = (statistics.mean(f.find_s[0] for f in found), statistics.mean(f.find_s[1] for f in found))
    return kept_row(Row(target, name, accs, float("nan"), stats.macs, stats.params, find, train_s, note), models[0],
                    shape, folder)


def remeasure(outs: list[Path], rounds: int) -> None:
    """Re-time every kept model of finished runs in interleaved rounds (all models once, ``rounds`` times):
    the latencies to report, taken on a quiet machine. The search-time latency stays in the note."""
    runs = {out: [Row(**r) for r in json.loads((out / "results.json").read_text())] for out in outs}
    kept = [r for rows in runs.values() for r in rows if r.onnx and Path(r.onnx).is_file()]
    backend, passes = OnnxRuntimeBackend(threads=1), {id(r): [] for r in kept}
    for _ in range(rounds):
        for row in kept:
            passes[id(row)].append(backend.measure_onnx(Path(row.onnx), PROTOCOL))
    print(f"re-timed {len(kept)} models of {len(outs)} run(s) in {rounds} interleaved rounds (median of the pass medians)")
    for out, rows in runs.items():
        reference = _reference_us(out, rows)
        _update(rows, passes)
        print(f"\n{out}:")
        print_table(rows, reference)
        (out / "results.remeasured.json").write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=1))


def _reference_us(out: Path, rows: list[Row]) -> float:
    """What the run's targets are fractions of (runs before reference.json: the dense row's latency)."""
    path = out / "reference.json"
    if path.is_file():
        return float(json.loads(path.read_text())["reference_us"])
    return next(r.latency_us for r in rows if r.method == "dense (start)")


def _update(rows: list[Row], passes: dict[int, list]) -> None:
    for row in (r for r in rows if id(r) in passes):
        timed = RepeatedMeasurement(tuple(passes[id(row)]))
        row.note = "; ".join(filter(None, [row.note, f"at search time {row.latency_us:.1f} us"]))
        row.latency_us = timed.median_us
        if row.target_us and timed.median_us > row.target_us and "MISSES" not in row.note:
            row.note += "; over the target when re-timed"
        if timed.noise:
            row.note += f"; noisy: {timed.noise[0]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", choices=("tiny", "mbv2"), default="tiny")
    parser.add_argument("--resolution", type=int, default=32, help="mbv2's input resolution")
    parser.add_argument("--targets", default="0.15,0.27,0.5", help="latency targets as fractions of dense")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=20, help="training / fine-tuning epochs per model and seed")
    parser.add_argument("--search-epochs", type=int, default=20, help="onnxnas search epochs (warm-up: 7/20 of them)")
    parser.add_argument("--bisect-branches", type=int, default=6, help="onnxnas search's alpha bisection branches")
    parser.add_argument("--grid", type=int, default=12, help="knob values each peer's search times first")
    parser.add_argument("--search-args", default="", help="more `onnxnas search` flags, e.g. '--max-batches 8 "
                        "--min-arch-steps 0' to fit a MobileNetV2 supernet on two cores")
    parser.add_argument("--methods", default="onnxnas,tp-magnitude,tp-taylor,tp-magnitude-r8,tp-taylor-r8,fastnas")
    parser.add_argument("--quick", action="store_true",
                        help="a 4-epoch search of 6 batches an epoch and 2 branches, a 4-point grid; unless given, "
                             "one target (0.27), one seed, 2 epochs")
    parser.add_argument("--out", default=None, help="keep runs and results.json here (default: a temporary folder)")
    parser.add_argument("--reference-us", type=float, default=None,
                        help="latency the --targets are fractions of (default: the dense network's, measured here)")
    parser.add_argument("--remeasure", type=Path, nargs="+", default=None, metavar="OUT",
                        help="only re-time the kept models of the runs in OUT..., together in --rounds interleaved rounds")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.remeasure:
        remeasure(args.remeasure, args.rounds)
        return
    search_extra: list[str] = []
    if args.quick:  # the quick values, where the flag was left at its default
        quick = {"targets": "0.27", "seeds": "0", "epochs": 2, "search_epochs": 4, "bisect_branches": 2, "grid": 4}
        for name, value in quick.items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
        search_extra = ["--max-batches", "6"]
    search_extra += shlex.split(args.search_args)
    torch.set_num_threads(1)
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_peers_"))
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    space_arg, lut, space_extra = network(args, out)
    space = load_space(space_arg)
    data = load_data("digits", space.resolution, space.in_chs)
    cfg = TrainConfig(epochs=args.epochs)
    dense_arch = extreme_arch(space, widest=True, num_classes=data.num_classes)
    shape = dense_arch.input_shape

    accs, dense_models, train_s = train_seeds(lambda s: build_model(dense_arch), data, cfg, seeds)
    stats = count_stats(dense_models[0], shape)
    rows = [kept_row(Row(0.0, "dense (start)", accs, float("nan"), stats.macs, stats.params, (0.0, 0.0), train_s),
                     dense_models[0], shape, out)]
    dense_us = args.reference_us or rows[0].latency_us
    (out / "reference.json").write_text(json.dumps({"reference_us": dense_us, "dense_us": rows[0].latency_us}))
    print_table(rows, dense_us)
    searches = knob_searches(methods, dense_models, data, shape, args.grid, out)

    for fraction in (float(f) for f in args.targets.split(",")):
        target = fraction * dense_us
        here = out / f"target{fraction:g}"
        here.mkdir(exist_ok=True)
        if "onnxnas" in methods:
            warmup = max(1, round(args.search_epochs * 7 / 20))
            with Clock() as find:
                code = cli(["search", "--method", "prunet", "--space", space_arg, "--lut", str(lut), "--data", "digits",
                            "--out", str(here / "onnxnas"), "--epochs", str(args.search_epochs),
                            "--warmup-epochs", str(warmup), "--target-latency-us", f"{target:.2f}",
                            "--bisect-branches", str(args.bisect_branches), *space_extra, *search_extra])
            if code == 0:
                arch = load_arch(here / "onnxnas" / "arch.json")
                accs, models, train_s = train_seeds(lambda s: build_model(arch), data, cfg, seeds)
                stats = count_stats(models[0], shape)
                rows.append(kept_row(Row(target, "onnxnas", accs, float("nan"), stats.macs, stats.params,
                                         (find.wall, find.cpu), train_s,
                                         f"LUT {arch.provenance['predicted_latency_us']:.1f} us, alpha "
                                         f"{arch.provenance['bisection']['chosen_alpha']:g}"), models[0], shape, here))
                rows += int8_rows(arch, models[0], data, target, here)
            else:
                rows.append(Row(target, "onnxnas", [0.0], float("nan"), 0, 0, (find.wall, find.cpu), (0.0, 0.0),
                                "no arch meets the target (see the search's message)"))
        for name, found in searches.items():
            if isinstance(found, str):
                rows.append(Row(target, name, [0.0], float("nan"), 0, 0, (0.0, 0.0), (0.0, 0.0), found))
            else:
                rows.append(peer_row(name, found, target, data, cfg, seeds, shape, here))
        print_table(rows, dense_us)
        (out / "results.json").write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=1))
        (out / "knobs.json").write_text(json.dumps(  # every knob each peer's search timed, per seed: (knob, us)
            {name: [sorted((k, r[1]) for k, r in ks.tried.items() if r is not None) for ks in found]
             for name, found in searches.items() if not isinstance(found, str)}, indent=1))
    print(f"\n{space.name}: seeds {seeds}, {args.epochs} epochs per model, search {args.search_epochs} epochs, "
          f"{args.bisect_branches} branches{' ' + ' '.join(search_extra) if search_extra else ''}; peers' grid "
          f"{args.grid}; test-split accuracy; runs in {out}")


if __name__ == "__main__":
    main()
