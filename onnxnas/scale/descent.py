"""Architecture descent: train, score, remove the k least important filters network-wide, repeat.

Every ``prune_every`` batches the ``prune_step`` filters with the lowest mean Taylor-FO score
(all variables ranked together, no per-layer normalization) lose their gates. The descent stops
when 5% of the filters remain or when the next step would empty a variable. From the first step
at which every variable has lost a filter on, each step is a row: (step, tau, widths), tau being
the parameter count of the derived arch at those widths. The descent never sees a budget.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from onnxnas.blocks.builder import Network
from onnxnas.cost import CountCost
from onnxnas.errors import OnnxNasError
from onnxnas.fileio import atomic_write_text, read_text
from onnxnas.scale.importance import Gates
from onnxnas.scale.variables import WidthPlan

MIN_FRACTION = 0.05


@dataclasses.dataclass(frozen=True)
class DescentConfig:
    prune_step: int = 10
    prune_every: int = 50
    lr: float = 0.01
    label_smoothing: float = 0.1


@dataclasses.dataclass(frozen=True)
class DescentRow:
    step: int
    tau: float
    widths: tuple[int, ...]


def _batches(loader: DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's batches, epoch after epoch, for as long as the descent runs."""
    for _ in itertools.count():
        yield from loader


def _step(gates: Gates, k: int) -> bool:
    """Prune the k lowest-scoring live filters; False (nothing pruned) when that would empty a variable."""
    scores = gates.mean_scores()
    candidates = [(float(s[c]), v, c) for v, s in enumerate(scores) for c in range(len(s)) if gates.masks[v][c] > 0]
    chosen = sorted(candidates)[:k]
    alive = gates.alive()
    for _, v, _ in chosen:
        alive[v] -= 1
    if min(alive) < 1:
        return False
    for _, v, c in chosen:
        gates.prune(v, c)
    gates.follow_hidden()
    return True


def descend(model: Network, plan: WidthPlan, widths: list[int], loader: DataLoader, cfg: DescentConfig,
            device: torch.device, on_step: Callable[[int, list[int]], None] | None = None) -> list[DescentRow]:
    """Run the descent on a (pre-trained) network built at ``widths``; returns the recorded rows."""
    gates = Gates(model, plan, widths)
    params = CountCost("params")
    floor = MIN_FRACTION * sum(widths)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True)
    rows: list[DescentRow] = []
    batches, step = _batches(loader), 0
    model.train()
    try:
        while True:
            for x, y in itertools.islice(batches, cfg.prune_every):
                loss = F.cross_entropy(model(x.to(device)), y.to(device), label_smoothing=cfg.label_smoothing)
                if not torch.isfinite(loss):
                    raise OnnxNasError(f"descent diverged: the loss is not finite at step {step + 1}",
                                       fix="lower --lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                gates.batch_done()
            if sum(gates.alive()) - cfg.prune_step < floor or not _step(gates, cfg.prune_step):
                break
            step += 1
            gates.reset()
            alive = gates.alive()
            if on_step is not None:
                on_step(step, alive)
            if all(a < w for a, w in zip(alive, widths)):
                rows.append(DescentRow(step, params.exact(plan.apply(alive)), tuple(alive)))
    finally:
        gates.remove()
    return rows


def write_rows(path: Path, plan: WidthPlan, rows: list[DescentRow]) -> Path:
    """``descent/iter_<k>.csv``: step, tau, then one column per variable."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["step", "tau", *(v.name for v in plan.variables)])
    for row in rows:
        writer.writerow([row.step, f"{row.tau:.0f}", *row.widths])
    return atomic_write_text(path, buffer.getvalue())


def read_rows(path: Path, plan: WidthPlan) -> list[DescentRow]:
    """The rows of a CSV written by :func:`write_rows` for the same variables (resume, plots)."""
    lines = list(csv.reader(io.StringIO(read_text(path, "descent CSV"))))
    header = ["step", "tau", *(v.name for v in plan.variables)]
    if not lines or lines[0] != header:
        raise OnnxNasError("the descent CSV's columns are not this arch's width variables", where=str(path),
                           fix="rerun 'onnxnas scale' without --resume in a new --out")
    try:
        return [DescentRow(int(r[0]), float(r[1]), tuple(int(w) for w in r[2:])) for r in lines[1:]
                if len(r) == len(header)]
    except ValueError as exc:
        raise OnnxNasError(f"the descent CSV holds a non-number: {exc}", where=str(path),
                           fix="rerun 'onnxnas scale' without --resume in a new --out") from exc
